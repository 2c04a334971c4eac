package ledger

import (
	"fmt"
	"time"
)

// Stats is a point-in-time summary for metrics and status pages.
type Stats struct {
	Consumers          int // known consumers, gone ones included
	LiveConsumers      int // consumers holding a lease now
	Shapes             int // live shapes
	Pending            int // shapes with an unacked transaction
	Tombstones         int // ids with a tombstone within retention
	SafeLSN            LSN // safe flush LSN from memory
	FlushLSN           LSN // recorded flush position (what is reported)
	Position           LSN // end of the last processed transaction / idle WAL end
	Commits            uint64
	CommitErrors       uint64
	LastCommitDuration time.Duration
	LastBatchOps       int
	// Evictions counts the shapes evicted since Open by reason, whoever
	// evicted them (the reconciler, an operator, a release, the start-up's
	// expired_before_restart, a changed relation). Reasons not seen yet are
	// absent.
	Evictions map[Reason]uint64
}

// EvictionReasons are the reasons a shape can be evicted with, in the order
// of their declaration: metrics export a zero for each before the first
// eviction, so a rate over them is defined from the start.
var EvictionReasons = []Reason{ReasonLeaseExpired, ReasonProcessGone, ReasonNotInInventory, ReasonStalled,
	ReasonWALBudget, ReasonReleased, ReasonManual, ReasonExpiredBeforeRestart, ReasonRelationChanged}

// Stats returns counters and positions for metrics.
func (l *Ledger) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.stats
	st.Consumers = len(l.consumers)
	for _, c := range l.consumers {
		if l.live(c) {
			st.LiveConsumers++
		}
	}
	st.Shapes, st.Pending, st.Tombstones = l.t.shapes.Len(), len(l.t.heap), len(l.tombs)
	st.SafeLSN, st.FlushLSN, st.Position = l.t.safe(), l.persistedFlush, l.t.position
	st.Evictions = make(map[Reason]uint64, len(l.evictions))
	for r, n := range l.evictions {
		st.Evictions[r] = n
	}
	return st
}

// Record appends an event to the journal for another component (the
// reconciler's challenges and slot audits, the stream's slot advances). It is
// written with the next group commit; Sync waits for it.
func (l *Ledger) Record(e Event) error {
	if e.Kind == "" {
		return fmt.Errorf("%w: event without a kind", ErrInvalid)
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.fill.events = append(l.fill.events, e)
	l.queued()
	return nil
}
