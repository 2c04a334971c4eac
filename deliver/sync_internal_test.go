package deliver

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// TestSyncDoesNotRouteAStaleDefinition: Sync reads the ledger's shapes,
// then a DELETE and a PUT of the same id with another table land before it
// applies them. Sync must not put the old definition back over the new one,
// or the new shape's transactions would be flushed past untracked (I1).
// "while routing" is the same with another shape routed already: Sync
// compares, shape by shape.
func TestSyncDoesNotRouteAStaleDefinition(t *testing.T) {
	for name, shapes := range map[string][]string{"alone": {"x"}, "while routing": {"w", "x"}} {
		t.Run(name, func(t *testing.T) { syncStaleDefinition(t, shapes) })
	}
}

func syncStaleDefinition(t *testing.T, shapes []string) {
	l, err := ledger.Open(ledger.Config{Path: t.TempDir() + "/ledger.db",
		Identity: ledger.Identity{SystemID: "7000000000000000001", Timeline: 1, Database: "app", Slot: "ledgerd"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	h := New(Config{Ledger: l})
	defer h.Close()
	for _, c := range []string{"c1", "c2"} {
		if _, err := l.Register(ledger.ConsumerSpec{ID: c, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range shapes {
		if _, _, err := h.CreateShape(ledger.ShapeSpec{ID: id, Consumer: "c1", Table: "public.t"}); err != nil {
			t.Fatal(err)
		}
	}
	// Sync sees x on public.t, but it needs routing (a shape another
	// component created): the router does not have it yet.
	h.router.Remove("x")
	syncHook = func() {
		syncHook = nil
		if err := l.DeleteShape("x"); err != nil {
			t.Fatal(err)
		}
		h.RemoveShape("x", "")
		if _, _, err := h.CreateShape(ledger.ShapeSpec{ID: "x", Consumer: "c2", Table: "public.u"}); err != nil {
			t.Fatal(err)
		}
	}
	defer func() { syncHook = nil }()
	h.Sync()
	if cur, ok := h.router.Shape("x"); !ok || cur.Table != "public.u" || cur.Consumer != "c2" {
		t.Fatalf("router has x = %+v (%v), want the new definition on public.u", cur, ok)
	}
	sh, _ := l.Shape("x")
	commit := sh.StartLSN + 0x100
	txn := &stream.Txn{Xid: 1, CommitLSN: commit, EndLSN: commit + 8,
		Changes: []stream.Change{{Op: stream.OpInsert, Table: "public.u", New: []stream.Column{{Name: "id", Value: "1"}}}}}
	if err := h.HandleTxn(context.Background(), txn); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Shape("x"); got.PendingLSN != commit {
		t.Errorf("x pending %s, want %s: its transaction went untracked", got.PendingLSN, commit)
	}
}

// TestRestartedStreamEndsAnOverflowPastItsStart: an outbox overflowed at
// 0/300, then the shape that missed it was evicted, so the slot's confirmed
// position moved past it. The stream the Runner starts again begins after
// everything handed before; its first transaction must still end the
// overflow, or the consumer's other shapes would be dropped from for good
// (no replay is asked again) and pin the slot (I1, I3).
func TestRestartedStreamEndsAnOverflowPastItsStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, err := ledger.Open(ledger.Config{Path: t.TempDir() + "/ledger.db",
			Identity: ledger.Identity{SystemID: "7000000000000000001", Timeline: 1, Database: "app", Slot: "ledgerd"}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = l.Close() }()
		h := New(Config{Ledger: l, OutboxBytes: 2500, SlowConsumerTimeout: 30 * time.Second, KeepaliveInterval: time.Hour})
		defer h.Close()
		if _, err := l.Register(ledger.ConsumerSpec{ID: "slow", TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		for id, table := range map[string]string{"s1": "public.t", "s2": "public.u"} {
			if _, _, err := h.CreateShape(ledger.ShapeSpec{ID: id, Consumer: "slow", Table: table}); err != nil {
				t.Fatal(err)
			}
		}
		big := strings.Repeat("x", 700)
		handle := func(lsn ledger.LSN, table string) {
			t.Helper()
			txn := &stream.Txn{Xid: uint32(lsn), CommitLSN: lsn, EndLSN: lsn + 8,
				Changes: []stream.Change{{Op: stream.OpInsert, Table: table, New: []stream.Column{{Name: "v", Value: big}}}}}
			if err := h.HandleTxn(context.Background(), txn); err != nil {
				t.Fatal(err)
			}
		}
		handle(0x100, "public.t")
		handle(0x200, "public.t")
		handle(0x300, "public.t") // waits out the slow-consumer timeout, then overflows
		if st, _ := h.Consumer("slow"); !st.Overflowed {
			t.Fatal("outbox did not overflow")
		}
		if _, err := l.Evict("s1", ledger.ReasonManual, "test", "operator"); err != nil {
			t.Fatal(err)
		}
		h.RemoveShape("s1", ledger.ReasonManual)
		select {
		case <-h.Replay():
		default:
			t.Fatal("no replay asked once the outbox emptied")
		}
		if safe := l.SafeLSN(); safe <= 0x300 {
			t.Fatalf("safe LSN %s, want past 0/300 once s1 is evicted", safe)
		}
		// The Runner starts a new stream at the slot's confirmed position.
		h.streamRestarted()
		handle(0x400, "public.u")
		if st, _ := h.Consumer("slow"); st.Overflowed || st.OutboxTxns != 1 {
			t.Fatalf("after the restart: overflowed %v, %d transactions in the outbox; want 0/400 kept", st.Overflowed, st.OutboxTxns)
		}
	})
}

// TestSyncAppliesWhatChanged: after the first Sync, Sync applies the
// ledger's change feed: a shape evicted by another component leaves the
// router, one created or bound elsewhere is routed with its current
// definition, and a gone consumer's outbox is dropped.
func TestSyncAppliesWhatChanged(t *testing.T) {
	l, err := ledger.Open(ledger.Config{Path: t.TempDir() + "/ledger.db",
		Identity: ledger.Identity{SystemID: "7000000000000000001", Timeline: 1, Database: "app", Slot: "ledgerd"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	h := New(Config{Ledger: l})
	defer h.Close()
	c1, err := l.Register(ledger.ConsumerSpec{ID: "c1", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if _, _, err := h.CreateShape(ledger.ShapeSpec{ID: id, Consumer: "c1", Table: "public.t"}); err != nil {
			t.Fatal(err)
		}
	}
	h.Sync() // the first looks at everything
	h.outbox("c1", true)
	// Another component: an eviction, a shape created and one bound.
	if _, err := l.Evict("a", ledger.ReasonManual, "test", "operator"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.PutShape(ledger.ShapeSpec{ID: "n", Consumer: "c1", Table: "public.u"}); err != nil {
		t.Fatal(err)
	}
	if err := l.BindShapes([]string{"b"}, 16400, 0x10); err != nil {
		t.Fatal(err)
	}
	h.Sync()
	if _, ok := h.router.Shape("a"); ok {
		t.Error("evicted shape a still routed")
	}
	if sh, ok := h.router.Shape("n"); !ok || sh.Table != "public.u" {
		t.Errorf("shape n routed %v as %+v, want it on public.u", ok, sh)
	}
	if sh, ok := h.router.Shape("b"); !ok || sh.RelID != 16400 {
		t.Errorf("shape b routed %v as %+v, want it bound to 16400", ok, sh)
	}
	if err := l.Release("c1", c1.Lease); err != nil {
		t.Fatal(err)
	}
	h.Sync()
	if _, ok := h.Consumer("c1"); ok {
		t.Error("the outbox of released c1 is still there")
	}
	if n := h.router.Len(); n != 0 {
		t.Errorf("router holds %d shapes after c1 was released, want 0", n)
	}
}
