package reconcile

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/ledger"
)

// Reconciler runs the liveness and progress probes (docs/operations.md, "Liveness") over the
// ledger and evicts what no live consumer holds. Create it with New; run
// Run in a goroutine, or call Pass.
type Reconciler struct {
	cfg Config
	log zerolog.Logger
	m   *metrics

	// passMu serialises passes: a pass reads everything, decides, then acts.
	passMu      sync.Mutex
	breaker     breaker
	procs       map[string]procSeen // by consumer id
	lastSlot    SlotState
	hasLastSlot bool
	slotAhead   bool // the last audit found the slot past the ledger's reported flush

	// What tells a pass which consumers to judge (probes.go).
	watch   *ledger.Watch
	again   map[string]struct{}
	sweep   []string
	sweepAt int

	testEnded func() // tests only: runs after a pass ended a consumer

	// mu guards the progress probe's memory, also written by Defer from
	// API goroutines.
	mu         sync.Mutex
	challenged map[string]challenge
	deferred   map[string]time.Time

	// lastPass is the Unix nanosecond time the last pass ended (LastPass).
	lastPass atomic.Int64

	// Run's error log state.
	failing    int
	failingAt  time.Time
	lastErrLog time.Time
}

// challenge is a challenge sent to a pending shape.
type challenge struct {
	gen     uint64
	at      time.Time
	flushed ledger.LSN // FlushedLSN when challenged: any ack beyond it is progress
	pending ledger.LSN
}

// New returns a Reconciler. Config.Ledger is required (ErrNoLedger).
func New(cfg Config) (*Reconciler, error) {
	if cfg.Ledger == nil {
		return nil, ErrNoLedger
	}
	if cfg.EvictMaxFraction > 1 || math.IsNaN(cfg.EvictMaxFraction) {
		return nil, fmt.Errorf("reconcile: EvictMaxFraction %v: use a fraction between 0 and 1", cfg.EvictMaxFraction)
	}
	if cfg.MaxShapeLagBytes < 0 {
		return nil, fmt.Errorf("reconcile: MaxShapeLagBytes %d: use 0 (off) or a positive number of bytes", cfg.MaxShapeLagBytes)
	}
	cfg = cfg.withDefaults()
	return &Reconciler{
		cfg:        cfg,
		log:        cfg.Logger,
		m:          newMetrics(),
		procs:      map[string]procSeen{},
		challenged: map[string]challenge{},
		deferred:   map[string]time.Time{},
	}, nil
}

func (r *Reconciler) now() time.Time { return r.cfg.Clock.Now() }

// Run passes every Config.Interval until ctx is done, starting with one pass
// at once. A failing pass is retried at the next tick; failures are logged
// at most once per Config.ErrorLogInterval, and a "recovered" line follows
// the first pass that succeeds again. It returns nil when ctx is done.
func (r *Reconciler) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	r.runPass(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.runPass(ctx)
		}
	}
}

func (r *Reconciler) runPass(ctx context.Context) {
	err := r.Pass(ctx)
	if ctx.Err() != nil || errors.Is(err, ledger.ErrClosed) {
		return // shutting down
	}
	now := r.now()
	if err == nil {
		if r.failing > 0 {
			r.log.Info().Int("failed_passes", r.failing).Dur("failing_for", now.Sub(r.failingAt)).Msg("reconcile recovered")
			r.failing = 0
		}
		return
	}
	if r.failing == 0 {
		r.failingAt = now
	}
	r.failing++
	if r.failing == 1 || now.Sub(r.lastErrLog) >= r.cfg.ErrorLogInterval {
		r.lastErrLog = now
		r.log.Error().Err(err).Int("failed_passes", r.failing).Dur("retry_in", r.cfg.Interval).Msg("reconcile pass failed")
	}
}

// LastPass returns when the last pass ended, whatever its result; zero
// before the first. A pass that never ends (a hung query, a deadlock) shows
// as a LastPass that grows old: the daemon's watchdog stops its pings then,
// and the service manager restarts it.
func (r *Reconciler) LastPass() time.Time {
	n := r.lastPass.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Defer records a consumer's answer to a challenge: the shapes are alive
// and working on what they hold. It restarts their stall grace. It is the
// API's Config.Defer hook; the API has checked that the shapes are the
// consumer's.
//
// A stalled eviction decided before the defer was recorded may be committing
// meanwhile; Defer then waits for it and returns the shape's *ledger.GoneError,
// so a defer is never accepted for a shape that is evicted anyway (I4).
func (r *Reconciler) Defer(consumer string, shapes []string) error {
	now := r.now()
	r.mu.Lock()
	for _, id := range shapes {
		r.deferred[id] = now
	}
	r.mu.Unlock()
	for _, id := range shapes {
		if _, ok := r.cfg.Ledger.SettledShape(id); ok {
			continue
		}
		if ts, ok := r.cfg.Ledger.Tombstone(id); ok {
			return &ledger.GoneError{Shape: id, Consumer: ts.Consumer, Reason: ts.Reason, Evidence: ts.Evidence, At: ts.At}
		}
		return fmt.Errorf("deferring shape %s: %w", id, ledger.ErrNotFound)
	}
	for _, id := range shapes {
		r.record(ledger.Event{Time: now, Kind: EventDeferred, Consumer: consumer, Shape: id, Detail: "challenge answered with defer: stall grace restarts"})
	}
	return nil
}

// EventDeferred is the journal kind of a defer answer.
const EventDeferred = "deferred"

func (r *Reconciler) record(e ledger.Event) {
	if err := r.cfg.Ledger.Record(e); err != nil && !errors.Is(err, ledger.ErrClosed) {
		r.log.Warn().Err(err).Str("kind", e.Kind).Msg("recording a journal event")
	}
}

// Pass runs one reconcile pass: the slot audit, every probe over what may
// have changed (see the package doc), the liveness tick and the delivery
// sync. It is idempotent: a pass right after another finds nothing more to
// do. Errors of the parts are joined; the parts that could run did. When ctx
// ends it stops between two decisions and records no tick.
func (r *Reconciler) Pass(ctx context.Context) error {
	r.passMu.Lock()
	defer r.passMu.Unlock()
	var errs []error
	slot, haveSlot, err := r.audit(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	now := r.now()
	p := r.newPass(ctx, now)
	p.relations(ctx)
	p.consumers()
	p.orphans()
	p.inventory()
	if haveSlot && r.cfg.MaxShapeLagBytes > 0 {
		p.walBudget(slot.WALEnd)
	}
	p.progress()
	errs = append(errs, p.errs...)
	p.finish()

	// A cancelled pass records no tick: it did not judge every lease (I5).
	if !p.cancelled {
		if err := r.cfg.Ledger.RecordTick(now); err != nil {
			errs = append(errs, err)
		}
	}
	if r.cfg.Syncer != nil {
		r.cfg.Syncer.Sync()
	}
	r.m.passes.Inc()
	r.m.lastPass.Set(float64(now.UnixNano()) / 1e9)
	r.lastPass.Store(r.now().UnixNano())
	err = errors.Join(errs...)
	if err != nil {
		r.m.passErrors.Inc()
	}
	return err
}

// stamp formats a time for evidence.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}
