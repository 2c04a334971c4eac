package ledger_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestLeaseJudgedOnMonotonicClock: within a process a lease runs on the
// monotonic clock. A wall clock step past the TTL does not free the id for
// another registration, nor does a step back keep it held once the TTL has
// really passed; views show the expiry in the current wall clock, and the
// file keeps the wall clock time for restarts.
func TestLeaseJudgedOnMonotonicClock(t *testing.T) {
	l, clk, _ := newLedger(t)
	c := mustRegister(t, l, "c", 10*time.Second)
	clk.Set(clk.Now().Add(time.Hour))
	clk.Advance(time.Second)
	if _, err := l.Register(ledger.ConsumerSpec{ID: "c", TTL: 10 * time.Second}); !errors.Is(err, ledger.ErrConsumerExists) {
		t.Fatalf("register over a lease with 9s left, after a wall clock step of an hour: %v, want ErrConsumerExists", err)
	}
	if err := l.CheckLease("c", c.Lease); err != nil {
		t.Fatalf("the lease after the step: %v", err)
	}
	view, _ := l.Consumer("c")
	if left := view.ExpiresAt.Sub(clk.Now()); left != 9*time.Second {
		t.Errorf("view expires in %s by the stepped wall clock, want 9s", left)
	}
	if got := l.Stats().LiveConsumers; got != 1 {
		t.Errorf("live consumers = %d, want 1", got)
	}

	clk.Set(clk.Now().Add(-3 * time.Hour))
	clk.Advance(9 * time.Second)
	if got := l.Stats().LiveConsumers; got != 0 {
		t.Errorf("live consumers after the TTL passed = %d, want 0", got)
	}
	again, err := l.Register(ledger.ConsumerSpec{ID: "c", TTL: 10 * time.Second})
	if err != nil {
		t.Fatalf("register after the TTL passed, the wall clock stepped back: %v", err)
	}
	if again.Epoch != c.Epoch+1 {
		t.Errorf("epoch %d, want %d", again.Epoch, c.Epoch+1)
	}
}

// TestLeaseRunsFromStreamClose: a lease held by an open change stream runs
// its TTL again, on the monotonic clock, from the moment the last stream
// closes.
func TestLeaseRunsFromStreamClose(t *testing.T) {
	l, clk, _ := newLedger(t)
	c := mustRegister(t, l, "c", 10*time.Second)
	clk.Advance(8 * time.Second)
	epoch, err := l.OpenStream("c", c.Lease)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	l.CloseStream("c", epoch)
	clk.Advance(9 * time.Second)
	if _, err := l.Register(ledger.ConsumerSpec{ID: "c", TTL: 10 * time.Second}); !errors.Is(err, ledger.ErrConsumerExists) {
		t.Fatalf("register 9s after the stream closed: %v, want ErrConsumerExists", err)
	}
	clk.Advance(time.Second)
	if _, err := l.Register(ledger.ConsumerSpec{ID: "c", TTL: 10 * time.Second}); err != nil {
		t.Fatalf("register 10s after the stream closed: %v", err)
	}
}
