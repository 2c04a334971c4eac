package api_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/internal/clocktest"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestStreamOfANewLeaseHoldsIt: consumer c1 streams; the reconciler ends
// its lease (its process is gone) while that stream is still open on the
// daemon; the process comes back, registers c1 again and opens its stream.
// The new lease is held by the new stream whatever the old one does, or the
// lease probe would end a consumer that is streaming.
func TestStreamOfANewLeaseHoldsIt(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k1 := e.register("c1")
	s1, err := k1.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	if err := e.l.ExpireConsumer("c1", ledger.ReasonProcessGone, "test: pid gone"); err != nil {
		t.Fatal(err)
	}
	k2 := e.register("c1")
	s2, err := k2.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if c, _ := e.l.Consumer("c1"); !c.Streaming {
		t.Errorf("epoch %d streams, but the ledger says it does not: the lease probe would end it", c.Epoch)
	}
	// The old stream is replaced by the new one and ends.
	for {
		if _, _, err := s1.Next(); err != nil {
			break
		}
	}
	if c, _ := e.l.Consumer("c1"); !c.Streaming {
		t.Errorf("after the old stream ended, epoch %d streams but the ledger says it does not", c.Epoch)
	}
}

// TestStreamOfAnEndedLeaseLeavesTheNewOneAlone: consumer c1's lease is
// ended while its stream is still open; c1 registers again and does not
// stream. When the old stream closes, the new lease must not be touched: it
// runs from its own registration and heartbeats only.
func TestStreamOfAnEndedLeaseLeavesTheNewOneAlone(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC))
	e := newEnvClock(t, clk)
	ctx := context.Background()
	k1 := e.register("c1")
	s1, err := k1.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	if err := e.l.ExpireConsumer("c1", ledger.ReasonProcessGone, "test: pid gone"); err != nil {
		t.Fatal(err)
	}
	e.register("c1")
	before, _ := e.l.Consumer("c1")
	clk.Advance(time.Second)
	// The daemon drops the ended consumer's stream (as Sync does after a
	// reconcile pass); it is over once the consumer reads its end.
	e.hub.DropConsumer("c1")
	for {
		if _, _, err := s1.Next(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Logf("old stream ended with %v", err)
			}
			break
		}
	}
	after, _ := e.l.Consumer("c1")
	if after.Streaming || !after.ExpiresAt.Equal(before.ExpiresAt) || !after.LastHeartbeat.Equal(before.LastHeartbeat) {
		t.Errorf("the old lease's stream closing changed the new lease: streaming %v, expires %s (was %s), last heartbeat %s (was %s)",
			after.Streaming, after.ExpiresAt, before.ExpiresAt, after.LastHeartbeat, before.LastHeartbeat)
	}
}
