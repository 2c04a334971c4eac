package ledger_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestExpiredConsumersFollowLeases: whatever sequence of registrations,
// heartbeats, stream opens and closes, releases and expiries, the lease heap
// returns exactly the consumers a look at every consumer finds expired:
// not gone, no open stream, lease end passed (I3).
func TestExpiredConsumersFollowLeases(t *testing.T) {
	clk := newClock()
	l := openAt(t, testConfig(filepath.Join(t.TempDir(), "ledger.db"), clk))
	rng := rand.New(rand.NewPCG(1, 2))
	leases := map[string]ledger.Consumer{}
	streams := map[string]uint64{}
	ids := make([]string, 40)
	for i := range ids {
		ids[i] = fmt.Sprintf("c%02d", i)
	}
	for step := range 2000 {
		id := ids[rng.IntN(len(ids))]
		c, known := leases[id]
		switch op := rng.IntN(7); {
		case op == 0 || !known:
			if got, err := l.Register(ledger.ConsumerSpec{ID: id, TTL: time.Duration(1+rng.IntN(20)) * time.Second}); err == nil {
				leases[id] = got
				delete(streams, id)
			}
		case op == 1:
			_, _ = l.Heartbeat(id, c.Lease, nil)
		case op == 2:
			if ep, err := l.OpenStream(id, c.Lease); err == nil {
				streams[id] = ep
			}
		case op == 3:
			if ep, ok := streams[id]; ok {
				l.CloseStream(id, ep)
				delete(streams, id)
			}
		case op == 4 && rng.IntN(4) == 0:
			_ = l.Release(id, c.Lease)
		case op == 5:
			if seen, ok := l.Consumer(id); ok && !seen.Gone && !seen.Streaming && !clk.Now().Before(seen.ExpiresAt) {
				_ = l.ExpireConsumerIf(seen, ledger.ReasonLeaseExpired, "test")
			}
		default:
			clk.Advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
		}
		var want []string
		for _, c := range l.Consumers() {
			if !c.Gone && !c.Streaming && !clk.Now().Before(c.ExpiresAt) {
				want = append(want, c.ID)
			}
		}
		var got []string
		for _, c := range l.ExpiredConsumers() {
			got = append(got, c.ID)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: expired %v, want %v", step, got, want)
		}
	}
}

// TestWatchReportsChanges: a change feed reports everything at first, then
// the consumers and shapes that changed, and everything again once more
// changed than it remembers.
func TestWatchReportsChanges(t *testing.T) {
	clk := newClock()
	l := openAt(t, testConfig(filepath.Join(t.TempDir(), "ledger.db"), clk))
	w, wc := l.Watch(), l.WatchConsumers()
	if ch := w.Drain(); !ch.All {
		t.Fatalf("first drain %+v, want All", ch)
	}
	wc.Drain()
	c, err := l.Register(ledger.ConsumerSpec{ID: "c", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.PutShape(ledger.ShapeSpec{ID: "s", Consumer: "c", Table: "public.t"}); err != nil {
		t.Fatal(err)
	}
	if ch := w.Drain(); ch.All || !slices.Equal(ch.Consumers, []string{"c"}) || !slices.Equal(ch.Shapes, []string{"s"}) {
		t.Fatalf("drain %+v, want consumer c and shape s", ch)
	}
	if ch := wc.Drain(); ch.All || !slices.Equal(ch.Consumers, []string{"c"}) || len(ch.Shapes) != 0 {
		t.Fatalf("consumers-only drain %+v, want consumer c alone", ch)
	}
	if ch := w.Drain(); ch.All || len(ch.Consumers)+len(ch.Shapes) != 0 {
		t.Fatalf("drain with nothing changed %+v", ch)
	}
	if _, err := l.Heartbeat("c", c.Lease, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteShape("s"); err != nil {
		t.Fatal(err)
	}
	if ch := w.Drain(); !slices.Equal(ch.Consumers, []string{"c"}) || !slices.Equal(ch.Shapes, []string{"s"}) {
		t.Fatalf("drain %+v, want the heartbeat of c and the eviction of s", ch)
	}
}
