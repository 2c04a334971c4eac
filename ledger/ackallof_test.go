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
	acks, below := l.AckAllOf("c", 0x180)
	if want := []ledger.ShapeAck{{ID: "a", LSN: 0x100}, {ID: "b", LSN: 0x180}}; !reflect.DeepEqual(acks, want) || !below {
		t.Fatalf("AckAllOf(c, 0x180) = %v, %v; want %v, true", acks, below, want)
	}
	if err := l.Ack("a", 0x100); err != nil {
		t.Fatal(err)
	}
	acks, _ = l.AckAllOf("c", 0x300)
	if want := []ledger.ShapeAck{{ID: "b", LSN: 0x200}}; !reflect.DeepEqual(acks, want) {
		t.Fatalf("AckAllOf(c, 0x300) = %v; want %v", acks, want)
	}
	if err := l.Ack("b", 0x200); err != nil {
		t.Fatal(err)
	}
	if acks, _ := l.AckAllOf("c", 0x300); len(acks) != 0 {
		t.Fatalf("AckAllOf(c, 0x300) after every shape acked = %v; want none", acks)
	}
	if acks, below := l.AckAllOf("d", 0); len(acks) != 0 || below {
		t.Fatalf("AckAllOf(d, 0) = %v, %v; want none, false", acks, below)
	}
	if acks, below := l.AckAllOf("nobody", 0x300); len(acks) != 0 || below {
		t.Fatalf("AckAllOf of an unknown consumer = %v, %v", acks, below)
	}
}
