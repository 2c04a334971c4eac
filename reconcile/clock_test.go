package reconcile_test

import (
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestWallClockStepExpiresNoLease: leases are judged on the monotonic clock
// within a process. A wall clock step forward by more than the TTL, while
// little time passes, expires no consumer (I5); a step backwards does not
// keep alive a consumer whose TTL has really passed (I3).
func TestWallClockStepExpiresNoLease(t *testing.T) {
	e := newEnv(t, nil)
	a := e.register("a", 10*time.Second)
	b := e.register("b", 10*time.Second)
	e.shapes("a", "sa")
	e.shapes("b", "sb")
	e.clk.Advance(time.Second)
	e.heartbeat(a, nil)
	e.heartbeat(b, nil)

	e.clk.Set(e.clk.Now().Add(time.Hour)) // the wall clock steps an hour ahead
	e.clk.Advance(time.Second)
	e.pass()
	e.live("sa", "sb")
	for _, id := range []string{"a", "b"} {
		c, _ := e.l.Consumer(id)
		if c.Gone {
			t.Fatalf("consumer %s ended by a wall clock step: %s", id, c.GoneReason)
		}
		if left := c.ExpiresAt.Sub(e.clk.Now()); left != 9*time.Second {
			t.Errorf("consumer %s expires in %s by the stepped wall clock, want the 9s left of its lease", id, left)
		}
	}
	// A heartbeat after the step renews from the new wall time.
	e.heartbeat(a, nil)

	// The wall clock steps back two hours while the leases run on: 9s after
	// its last heartbeat b has 1s left, then its lease has run out, a
	// (renewed 1s later) has 1s left, then its lease has run out too.
	e.clk.Set(e.clk.Now().Add(-2 * time.Hour))
	e.clk.Advance(8 * time.Second)
	e.pass()
	e.live("sa", "sb")
	e.clk.Advance(time.Second)
	e.pass()
	e.evicted("sb", ledger.ReasonLeaseExpired)
	e.live("sa")
	e.clk.Advance(time.Second)
	e.pass()
	e.evicted("sa", ledger.ReasonLeaseExpired)
}
