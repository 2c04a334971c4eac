package stream

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// fixedFlush is a Handler whose FlushLSN the test sets.
type fixedFlush struct{ flush atomic.Uint64 }

func (*fixedFlush) HandleTxn(context.Context, *Txn) error { return nil }
func (*fixedFlush) Idle(ledger.LSN)                       {}
func (h *fixedFlush) FlushLSN() ledger.LSN                { return ledger.LSN(h.flush.Load()) }

// deadlines counts the read deadlines set on the session's connection.
type deadlines struct{ n atomic.Int64 }

func (d *deadlines) SetReadDeadline(time.Time) error { d.n.Add(1); return nil }

// TestNudgeOnlyWhenFlushMoved: an ack that did not move the flush position
// past what was confirmed (another shape still holds it) does not cut the
// session's read short; one that did, does.
func TestNudgeOnlyWhenFlushMoved(t *testing.T) {
	h := &fixedFlush{}
	s, err := New(Config{ConnString: "postgres://localhost/app", Slot: "ledgerd", Publication: "ledgerd"}, h)
	if err != nil {
		t.Fatal(err)
	}
	d := &deadlines{}
	var rd readDeadliner = d
	s.readConn.Store(&rd)
	h.flush.Store(0x500)
	s.stats.confirmed.Store(0x500)

	s.Nudge()
	if n := d.n.Load(); n != 0 || s.nudged.Load() {
		t.Fatalf("nudge with nothing new to confirm: %d read deadlines set, nudged %v; want none", n, s.nudged.Load())
	}
	h.flush.Store(0x600)
	s.Nudge()
	if n := d.n.Load(); n != 1 || !s.nudged.Load() {
		t.Fatalf("nudge after the flush moved: %d read deadlines set, nudged %v; want the read cut short", n, s.nudged.Load())
	}
}
