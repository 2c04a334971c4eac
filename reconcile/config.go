package reconcile

import (
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/ledger"
)

// Defaults applied to zero Config fields (docs/operations.md, "Flags").
const (
	DefaultInterval         = time.Second
	DefaultStallGrace       = 60 * time.Second
	DefaultChallengeTimeout = 10 * time.Second
	DefaultEvictMaxFraction = 0.5
	// MinEvictionsPerMinute is the circuit breaker's floor: small deployments
	// are never blocked below it (I5).
	MinEvictionsPerMinute = 10
	// BreakerWindow is the circuit breaker's rolling window.
	BreakerWindow = time.Minute
	// DefaultErrorLogInterval bounds how often a failing pass is logged.
	DefaultErrorLogInterval = time.Minute
	// Actor is the actor recorded on the reconciler's evictions.
	Actor = "reconciler"
)

// Ledger is what the reconciler needs of the ledger; *ledger.Ledger
// implements it.
type Ledger interface {
	Consumer(id string) (ledger.Consumer, bool)
	Shape(id string) (ledger.Shape, bool)
	SettledShape(id string) (ledger.Shape, bool)
	WatchConsumers() *ledger.Watch
	Owners() []string
	ExpiredConsumers() []ledger.Consumer
	ShapesOf(consumer string) []ledger.Shape
	ShapesNotIn(consumer string, held []string, createdBefore time.Time) []ledger.Shape
	ShapeCount(consumer string) int
	LiveShapes() int
	Relations() []ledger.RelationUse
	ShapesOn(relID uint32, table string) []ledger.Shape
	PendingSince(t time.Time) []ledger.Shape
	PendingBelow(lsn ledger.LSN) []ledger.Shape
	ExpireConsumerIf(seen ledger.Consumer, reason ledger.Reason, evidence string) error
	EvictIf(seen ledger.Shape, reason ledger.Reason, evidence, actor string, still func(cur ledger.Shape, owner ledger.Consumer) bool) (ledger.Tombstone, error)
	Tombstone(id string) (ledger.Tombstone, bool)
	FlushLSN() ledger.LSN
	RecordTick(now time.Time) error
	Record(e ledger.Event) error
	BindShapes(ids []string, relID uint32, at ledger.LSN) error
}

// Challenger sends a challenge frame to a shape's consumer (the progress
// probe: docs/api.md, "Challenges"); *deliver.Hub implements it.
type Challenger interface {
	Challenge(consumer, shape string)
}

// Syncer brings delivery in step with the ledger after evictions (routing
// drops evicted shapes, streams of gone consumers end); *deliver.Hub
// implements it.
type Syncer interface {
	Sync()
}

// Config configures a Reconciler. Zero values mean the documented default.
type Config struct {
	// Ledger is the state reconciled; required.
	Ledger Ledger
	// Challenger sends challenges; nil disables the progress probe's
	// challenges (and so its evictions, which need an unanswered one).
	Challenger Challenger
	// Syncer is called at the end of every pass, so delivery drops what
	// this pass (or anyone) evicted; nil skips it.
	Syncer Syncer
	// Slot audits the replication slot every pass; nil skips the audit and
	// the WAL budget probe (which needs the server WAL end).
	Slot SlotAuditor
	// Catalog is read every pass for the relation check (tables renamed or
	// dropped, filter columns dropped); nil turns the check off.
	Catalog Catalog
	// Process checks registered pids; nil means /proc of this host.
	Process ProcessProber
	// Host is this host's name: the process probe applies only to consumers
	// that registered this host. Empty means os.Hostname().
	Host string
	// Clock gives the time; nil means the system clock.
	Clock ledger.Clock
	// Interval is the pass period of Run. Default 1s.
	Interval time.Duration
	// StallGrace is how long a shape may be pending without ack progress
	// before it is challenged. Default 60s.
	StallGrace time.Duration
	// ChallengeTimeout is how long a challenged shape has to show ack
	// progress or answer with a defer before it is evicted as stalled.
	// Default 10s.
	ChallengeTimeout time.Duration
	// MaxShapeLagBytes is the per-shape WAL budget; 0 turns the probe off.
	MaxShapeLagBytes int64
	// EvictMaxFraction is the circuit breaker's limit: at most this fraction
	// of the shapes (never fewer than MinEvictionsPerMinute) evicted
	// automatically per rolling minute. Default 0.5.
	EvictMaxFraction float64
	// ErrorLogInterval bounds how often Run logs a failing pass. Default 1m.
	ErrorLogInterval time.Duration
	// Logger receives log lines; a "component" field is added.
	Logger zerolog.Logger
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.Process == nil {
		c.Process = ProcFS{}
	}
	if c.Host == "" {
		c.Host, _ = os.Hostname()
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.StallGrace <= 0 {
		c.StallGrace = DefaultStallGrace
	}
	if c.ChallengeTimeout <= 0 {
		c.ChallengeTimeout = DefaultChallengeTimeout
	}
	if c.EvictMaxFraction <= 0 {
		c.EvictMaxFraction = DefaultEvictMaxFraction
	}
	if c.ErrorLogInterval <= 0 {
		c.ErrorLogInterval = DefaultErrorLogInterval
	}
	c.Logger = c.Logger.With().Str("component", "reconcile").Logger()
	return c
}
