package reconcile_test

import (
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/reconcile"
)

// TestEvictionRaceWithAnswer: an ack, defer or heartbeat that lands after the
// reconciler decided to evict a shape, but before the eviction is committed,
// and is answered as accepted, keeps the shape: the eviction is re-judged on
// the state it would commit over, and refused when its reason no longer
// holds (I3 without evicting a consumer that answered).
func TestEvictionRaceWithAnswer(t *testing.T) {
	// stalled builds a shape challenged and silent past the challenge
	// timeout: the next pass decides to evict it as stalled.
	stalled := func(t *testing.T) (*env, ledger.LSN) {
		e := newEnv(t, nil)
		e.register("c", time.Hour)
		e.l.SetStreaming("c", true)
		e.shapes("c", "s")
		lsn := e.track("s")
		e.clk.Advance(time.Minute)
		e.pass()
		if n := e.ch.count(); n != 1 {
			t.Fatalf("%d challenges, want 1", n)
		}
		e.clk.Advance(10 * time.Second)
		return e, lsn
	}
	cases := []struct {
		name   string
		reason ledger.Reason
		setup  func(t *testing.T) (*env, func() error)
	}{
		{"stalled shape acks", ledger.ReasonStalled, func(t *testing.T) (*env, func() error) {
			e, lsn := stalled(t)
			return e, func() error { return e.l.Ack("s", lsn) }
		}},
		{"stalled shape defers", ledger.ReasonStalled, func(t *testing.T) (*env, func() error) {
			e, _ := stalled(t)
			return e, func() error { return e.r.Defer("c", []string{"s"}) }
		}},
		{"over-budget shape acks", ledger.ReasonWALBudget, func(t *testing.T) (*env, func() error) {
			e := newEnv(t, func(c *reconcile.Config) { c.MaxShapeLagBytes = 1 << 20 })
			e.register("c", time.Hour)
			e.l.SetStreaming("c", true)
			e.shapes("c", "s")
			lsn := e.track("s")
			e.slot.set(func(s *reconcile.SlotState) { s.WALEnd = lsn + 1<<20 + 1 })
			return e, func() error { return e.l.Ack("s", lsn) }
		}},
		{"shape missing from the inventory is listed again", ledger.ReasonNotInInventory, func(t *testing.T) (*env, func() error) {
			e := newEnv(t, nil)
			c := e.register("c", time.Hour)
			e.shapes("c", "s", "other")
			e.clk.Advance(time.Second)
			e.heartbeat(c, []string{"s", "other"})
			e.clk.Advance(time.Second)
			e.heartbeat(c, []string{"other"})
			return e, func() error {
				e.clk.Advance(time.Second)
				_, err := e.l.Heartbeat("c", c.Lease, []string{"s", "other"})
				return err
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, answer := tc.setup(t)
			fired := 0
			defer reconcile.SetEvictHook(func(shape string) {
				if shape != "s" {
					return
				}
				fired++
				if err := answer(); err != nil {
					t.Errorf("the answer racing the eviction was refused: %v", err)
				}
			})()
			e.pass()
			if fired != 1 {
				t.Fatalf("the pass decided %d evictions of s as %s, want 1", fired, tc.reason)
			}
			e.live("s")
		})
	}
}
