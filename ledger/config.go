package ledger

import (
	"time"

	"github.com/rs/zerolog"
)

// Defaults applied to zero Config fields.
const (
	DefaultTTL                = 10 * time.Second
	DefaultCommitDelay        = time.Millisecond
	DefaultFlushRecordGap     = 100 * time.Millisecond
	DefaultMaxBatch           = 10000
	DefaultTombstoneRetention = 7 * 24 * time.Hour
	DefaultJournalMaxEvents   = 100000
	DefaultJournalMaxAge      = 7 * 24 * time.Hour
	DefaultConsumerRetention  = 7 * 24 * time.Hour
)

// Clock gives the current time. It is injected so that lease and restart
// logic (I3, I5) is tested without sleeping. Now is the wall clock: what is
// recorded, shown, and compared across restarts.
type Clock interface{ Now() time.Time }

// MonotonicClock is a Clock that also reads a monotonic clock: elapsed time
// that steps of the wall clock (NTP, an operator setting the date) do not
// move. Within a process leases are judged on it, so a step larger than the
// TTL does not expire every consumer at once (I5), nor does a step back keep
// a dead one alive (I3). A Clock without it is read as the wall clock for
// both.
type MonotonicClock interface {
	Clock
	// Monotonic returns the time elapsed since some fixed instant of this
	// process.
	Monotonic() time.Duration
}

type systemClock struct{}

// processStart carries Go's monotonic reading: time.Since measures on it.
var processStart = time.Now()

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) Monotonic() time.Duration { return time.Since(processStart) }

// Identity is what a ledger file is bound to. SystemID and Slot must match on
// every open (*ForeignError otherwise); a Timeline change is recorded.
type Identity struct {
	SystemID string // IDENTIFY_SYSTEM systemid
	Timeline int32
	Database string
	Slot     string
}

// Config configures Open. Zero values mean the documented default.
type Config struct {
	// Path is the bbolt file; created if missing.
	Path string
	// Identity is recorded on first open; a file bound to another SystemID or
	// Slot is refused with *ForeignError.
	Identity Identity
	// Clock gives the time; nil means the system clock.
	Clock Clock
	// SlotConfirmedFlush is the slot's confirmed_flush_lsn when the daemon
	// starts; 0 means unknown. The stream resumes there, so everything
	// before it counts as processed: a shape created before the stream has
	// handed over a transaction starts there, not at 0/0 on a new file (its
	// flushed LSN must not claim less than the slot already confirmed).
	SlotConfirmedFlush LSN
	// DefaultTTL is the consumer lease TTL when a registration gives none.
	// Default 10s.
	DefaultTTL time.Duration
	// CommitDelay is how long the committer waits, after the first change of
	// an idle period, for more changes to share the bbolt transaction. Under
	// load a batch is cut as soon as the previous one is written. Default 1ms.
	CommitDelay time.Duration
	// FlushRecordGap is the least time between two commits made only to
	// record a new flush position (FlushLSN's idle path: transactions that
	// reach no shape, the WAL end of an idle stream). Under traffic no
	// shape follows, the safe position moves with every transaction; each
	// move need not cost a commit and an fsync, as long as the position
	// reaches Postgres within a status interval (I3). Acks are not held by
	// it. Default 100ms.
	FlushRecordGap time.Duration
	// MaxBatch is the most records written in one bbolt transaction; a batch
	// that reaches it is committed at once, a larger one (queued while the
	// previous was written) is split. Default 10000.
	MaxBatch int
	// TombstoneRetention is how long tombstones are kept. Default 7 days.
	TombstoneRetention time.Duration
	// ConsumerRetention is how long the record of a gone consumer is kept
	// (so that its calls get 410 with the reason) before the periodic
	// compaction deletes it. Default 7 days.
	ConsumerRetention time.Duration
	// JournalMaxEvents bounds the event journal by count. Default 100000.
	JournalMaxEvents int
	// JournalMaxAge bounds the event journal by age. Default 7 days.
	JournalMaxAge time.Duration
	// Logger receives the ledger's log lines; a "component" field is added.
	Logger zerolog.Logger
	// Slot, when set, is what Postgres says of the slot as the ledger is
	// opened. Open then refuses, with *SlotError, a file that does not hold
	// the slot's history: a new or 0-byte file against a slot that exists, a
	// file whose last reported flush is behind the slot's
	// confirmed_flush_lsn (an old backup), or a file tracking live shapes
	// whose slot is gone. Taking such a slot over silently would confirm
	// transactions no consumer received (I1) and forget evictions (I4).
	// nil skips the check.
	Slot *SlotInfo
	// AdoptSlot accepts such a file, and an existing 0-byte file, anyway:
	// the ledger takes the slot's confirmed position as its own reported
	// flush and records a slot_adopted event. Every consumer must then
	// resynchronise.
	AdoptSlot bool
}

// SlotInfo is the slot's row of pg_replication_slots when the ledger is
// opened. Postgres exposes no identity of a slot's creation (no creation time
// or id, up to version 17 at least), so a slot is known by its system,
// database and name (Identity), and its history by how far it is confirmed.
type SlotInfo struct {
	// Exists is false when the slot is missing and the caller is about to
	// create it.
	Exists bool
	// ConfirmedFlush is the slot's confirmed_flush_lsn.
	ConfirmedFlush LSN
}

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.DefaultTTL <= 0 {
		c.DefaultTTL = DefaultTTL
	}
	if c.CommitDelay <= 0 {
		c.CommitDelay = DefaultCommitDelay
	}
	if c.FlushRecordGap <= 0 {
		c.FlushRecordGap = DefaultFlushRecordGap
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.TombstoneRetention <= 0 {
		c.TombstoneRetention = DefaultTombstoneRetention
	}
	if c.ConsumerRetention <= 0 {
		c.ConsumerRetention = DefaultConsumerRetention
	}
	if c.JournalMaxEvents <= 0 {
		c.JournalMaxEvents = DefaultJournalMaxEvents
	}
	if c.JournalMaxAge <= 0 {
		c.JournalMaxAge = DefaultJournalMaxAge
	}
	c.Logger = c.Logger.With().Str("component", "ledger").Logger()
	return c
}
