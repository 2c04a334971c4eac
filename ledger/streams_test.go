package ledger_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestStreamsAreCountedPerLease: streams hold a lease while any of them is
// open; a stream still open under an ended lease neither holds nor renews
// the lease of the consumer that registered the id again (I3).
func TestStreamsAreCountedPerLease(t *testing.T) {
	l, clk, _ := newLedger(t)
	c1 := mustRegister(t, l, "c", 10*time.Second)
	if _, err := l.OpenStream("c", "forged"); !errors.Is(err, ledger.ErrWrongLease) {
		t.Fatalf("stream with a wrong lease: %v, want ErrWrongLease", err)
	}
	e1, err := l.OpenStream("c", c1.Lease)
	if err != nil {
		t.Fatal(err)
	}
	e1b, err := l.OpenStream("c", c1.Lease) // a reconnect before the old stream closed
	if err != nil {
		t.Fatal(err)
	}
	l.CloseStream("c", e1)
	clk.Advance(time.Minute)
	if c, _ := l.Consumer("c"); !c.Streaming {
		t.Fatal("one of two streams closed: the lease is no longer held")
	}
	if err := l.ExpireConsumer("c", ledger.ReasonProcessGone, "test"); err != nil {
		t.Fatal(err)
	}
	c2 := mustRegister(t, l, "c", 10*time.Second)
	e2, err := l.OpenStream("c", c2.Lease)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	l.CloseStream("c", e1b) // the ended lease's last stream closes late
	if c, _ := l.Consumer("c"); !c.Streaming || !c.LastHeartbeat.Equal(c2.LastHeartbeat) {
		t.Fatalf("after the old lease's stream closed: %+v, want the new lease streaming and untouched", c)
	}
	l.CloseStream("c", e2)
	if c, _ := l.Consumer("c"); c.Streaming || !c.ExpiresAt.Equal(clk.Now().Add(10*time.Second)) {
		t.Fatalf("after its last stream closed: %+v, want the lease running from now", c)
	}
}
