package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestAckEventOncePerMinute: a shape's acks are journaled at most once a
// minute each, and again once the minute has passed, whatever the number
// of other shapes acked in between.
func TestAckEventOncePerMinute(t *testing.T) {
	l, clk, _ := newLedger(t)
	mustRegister(t, l, "c", time.Hour)
	mustShapes(t, l, "c", "a", "b")
	acked := func(shape string) int {
		n := 0
		for _, e := range l.Events(0, 0) {
			if e.Kind == ledger.EventAcked && e.Shape == shape {
				n++
			}
		}
		return n
	}
	lsn := ledger.LSN(0x1000)
	ack := func(shapes ...string) {
		t.Helper()
		lsn += 0x10
		l.Track(lsn, lsn+8, shapes)
		for _, s := range shapes {
			mustAck(t, l, s, lsn)
		}
		if err := l.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ack("a")
	clk.Advance(30 * time.Second)
	ack("a", "b")
	if got := acked("a"); got != 1 {
		t.Fatalf("shape a acked twice within a minute has %d acked events, want 1", got)
	}
	if got := acked("b"); got != 1 {
		t.Fatalf("shape b has %d acked events, want 1", got)
	}
	clk.Advance(31 * time.Second) // a minute and a second after a's event
	ack("a", "b")
	if got, gotB := acked("a"), acked("b"); got != 2 || gotB != 1 {
		t.Fatalf("a minute after a's first event: %d events of a (want 2), %d of b (want 1)", got, gotB)
	}
	clk.Advance(2 * time.Minute)
	ack("a", "b")
	if got, gotB := acked("a"), acked("b"); got != 3 || gotB != 2 {
		t.Fatalf("minutes later: %d events of a (want 3), %d of b (want 2)", got, gotB)
	}
}
