package ledger_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestAckAllOf: an ack of every shape of a consumer moves only the shapes
// sent something they have not flushed, each up to the position or the last
// transaction it was sent if lower (never past it: I2), and says whether any shape is below the
// position at all (which makes an ack past what was delivered an error).
// Other consumers' shapes are not touched.
func TestAckAllOf(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", time.Hour)
	mustRegister(t, l, "d", time.Hour)
	for _, sp := range []ledger.ShapeSpec{
		{ID: "a", Consumer: "c", Table: "public.t"},
		{ID: "b", Consumer: "c", Table: "public.t"},
		{ID: "idle", Consumer: "c", Table: "public.t"},
		{ID: "other", Consumer: "d", Table: "public.t"},
	} {
		if _, _, err := l.PutShape(sp); err != nil {
			t.Fatal(err)
		}
	}
	l.Track(0x100, 0x110, []string{"a", "b", "other"})
	l.Track(0x200, 0x210, []string{"b", "other"})
	acks := l.AckAllOf("c", 0x180)
	if want := []ledger.ShapeAck{{ID: "a", LSN: 0x100}, {ID: "b", LSN: 0x180}}; !reflect.DeepEqual(acks, want) {
		t.Fatalf("AckAllOf(c, 0x180) = %v; want %v", acks, want)
	}
	if !l.FlushedBelow("c", 0x180) {
		t.Error("FlushedBelow(c, 0x180) = false with shapes not acked")
	}
	if err := l.Ack("a", 0x100); err != nil {
		t.Fatal(err)
	}
	acks = l.AckAllOf("c", 0x300)
	if want := []ledger.ShapeAck{{ID: "b", LSN: 0x200}}; !reflect.DeepEqual(acks, want) {
		t.Fatalf("AckAllOf(c, 0x300) = %v; want %v", acks, want)
	}
	if err := l.Ack("b", 0x200); err != nil {
		t.Fatal(err)
	}
	if acks := l.AckAllOf("c", 0x300); len(acks) != 0 {
		t.Fatalf("AckAllOf(c, 0x300) after every shape acked = %v; want none", acks)
	}
	if acks := l.AckAllOf("c", 0x300); len(acks) != 0 {
		t.Fatalf("AckAllOf(c, 0x300) again = %v; want none", acks)
	}
	if l.FlushedBelow("d", 0) {
		t.Error("FlushedBelow(d, 0) = true")
	}
	// Evicting a shape with something unacked drops it from what an ack
	// of all would move.
	if acks, want := l.AckAllOf("d", 0x300), []ledger.ShapeAck{{ID: "other", LSN: 0x200}}; !reflect.DeepEqual(acks, want) {
		t.Fatalf("AckAllOf(d, 0x300) = %v; want %v", acks, want)
	}
	if _, err := l.Evict("other", ledger.ReasonManual, "test", "test"); err != nil {
		t.Fatal(err)
	}
	if acks := l.AckAllOf("d", 0x300); len(acks) != 0 {
		t.Fatalf("AckAllOf(d, 0x300) after its shape was evicted = %v; want none", acks)
	}
	if acks := l.AckAllOf("nobody", 0x300); len(acks) != 0 || l.FlushedBelow("nobody", 0x300) {
		t.Fatalf("AckAllOf of an unknown consumer = %v", acks)
	}
}
