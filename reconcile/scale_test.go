package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/reconcile"
)

// TestLeaseExpiresAmongManyWithinIntervalPlusTTL: among many consumers whose
// leases hold, the one that stops heartbeating is ended by the first pass
// after its TTL runs out: passes are never later than one interval, so its
// shapes stop pinning the slot within TTL + the interval (I3). It sorts
// last and is not among the consumers that changed, so a pass that only
// swept the consumers a slice at a time would reach it too late.
func TestLeaseExpiresAmongManyWithinIntervalPlusTTL(t *testing.T) {
	const others, ttl = 600, 11 * time.Second
	e := newEnv(t, func(c *reconcile.Config) { c.EvictMaxFraction = 1 })
	for i := range others {
		id := fmt.Sprintf("c%04d", i)
		e.register(id, time.Hour)
		e.shapes(id, id+"-s")
	}
	victim := e.register("z-victim", ttl)
	e.shapes("z-victim", "z-victim-s")
	e.pass() // the first pass looks at everything
	e.pass() // nothing changed since
	registered := e.clk.Now()
	for e.clk.Now().Sub(registered) < ttl+time.Second {
		e.clk.Advance(time.Second)
		e.pass()
		if _, ok := e.l.Shape("z-victim-s"); !ok {
			break
		}
	}
	ts := e.evicted("z-victim-s", ledger.ReasonLeaseExpired)
	if late := ts.At.Sub(registered); late > ttl+time.Second {
		t.Fatalf("evicted %s after the last heartbeat, want within ttl %s + interval 1s", late, ttl)
	}
	if _, err := e.l.Heartbeat(victim.ID, victim.Lease, nil); err == nil {
		t.Fatal("the victim's lease still renews")
	}
	if n := e.l.LiveShapes(); n != others {
		t.Fatalf("%d shapes live, want the %d of the consumers still heartbeating", n, others)
	}
}

// TestPassStopsWhenCancelled: a pass whose context is cancelled (ledgerd
// shutting down) stops between two decisions instead of working through
// everything it found, so shutdown does not wait on a long pass.
func TestPassStopsWhenCancelled(t *testing.T) {
	e := newEnv(t, func(c *reconcile.Config) { c.EvictMaxFraction = 1 })
	for i := range 20 {
		id := fmt.Sprintf("c%02d", i)
		e.register(id, 10*time.Second)
		e.shapes(id, id+"-s")
	}
	e.clk.Advance(11 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := 0
	var sawCancel bool
	e.r.OnConsumerEnded(func() {
		if ended++; ended == 3 {
			cancel()
			sawCancel = true
		}
	})
	err := e.r.Pass(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("pass returned %v, want it to report the cancellation", err)
	}
	if !sawCancel || ended != 3 {
		t.Fatalf("%d consumers ended, want the pass to stop after the 3rd, when it was cancelled", ended)
	}
	if n := e.l.LiveShapes(); n != 17 {
		t.Fatalf("%d shapes live, want 17", n)
	}
	// The next pass finishes the work (once the breaker's window allows it).
	e.clk.Advance(reconcile.BreakerWindow)
	e.pass()
	if n := e.l.LiveShapes(); n != 0 {
		t.Fatalf("%d shapes live after the next pass, want 0", n)
	}
}
