package ledger_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestExpireConsumerIfStaleObservation: an expiry decided on an observation
// of an older lease does not end a consumer that registered again, renewed
// its lease or opened its stream since; one decided on the current state
// does, with its shapes.
func TestExpireConsumerIfStaleObservation(t *testing.T) {
	l, clk, _ := newLedger(t)
	seen := mustRegister(t, l, "c", time.Second)
	mustShapes(t, l, "c", "s1")
	clk.Advance(2 * time.Second) // lease expired: the reconciler would decide to end it

	again := mustRegister(t, l, "c", time.Second) // ...but it registered again meanwhile
	err := l.ExpireConsumerIf(seen, ledger.ReasonLeaseExpired, "stale")
	if !errors.Is(err, ledger.ErrChanged) {
		t.Fatalf("expiry on the old epoch: %v, want ErrChanged", err)
	}
	if err := l.CheckLease("c", again.Lease); err != nil {
		t.Fatalf("new lease after a stale expiry: %v", err)
	}
	if _, ok := l.Shape("s1"); !ok {
		t.Fatal("shape evicted by a stale expiry")
	}

	// Same epoch, but a heartbeat came after the observation.
	cur, _ := l.Consumer("c")
	clk.Advance(500 * time.Millisecond)
	if _, err := l.Heartbeat("c", again.Lease, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.ExpireConsumerIf(cur, ledger.ReasonLeaseExpired, "stale"); !errors.Is(err, ledger.ErrChanged) {
		t.Fatalf("expiry observed before a heartbeat: %v, want ErrChanged", err)
	}
	// Same epoch, the stream opened after the observation.
	cur, _ = l.Consumer("c")
	l.SetStreaming("c", true)
	if err := l.ExpireConsumerIf(cur, ledger.ReasonLeaseExpired, "stale"); !errors.Is(err, ledger.ErrChanged) {
		t.Fatalf("expiry observed before the stream opened: %v, want ErrChanged", err)
	}

	cur, _ = l.Consumer("c")
	if err := l.ExpireConsumerIf(cur, ledger.ReasonProcessGone, "pid 42 gone"); err != nil {
		t.Fatalf("expiry on the current observation: %v", err)
	}
	if err := l.CheckLease("c", again.Lease); !isGone(err) {
		t.Fatalf("lease after expiry: %v, want gone", err)
	}
	ts, ok := l.Tombstone("s1")
	if !ok || ts.Reason != ledger.ReasonProcessGone || ts.Evidence != "pid 42 gone" || ts.Actor != "reconciler" {
		t.Fatalf("tombstone = %+v, %v", ts, ok)
	}
	// A gone consumer is not ended twice.
	if err := l.ExpireConsumerIf(cur, ledger.ReasonLeaseExpired, "again"); !isGone(err) {
		t.Fatalf("second expiry: %v, want gone", err)
	}
}
