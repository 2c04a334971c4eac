package deliver

import (
	"context"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// TestSyncDoesNotRouteAStaleDefinition: Sync reads the ledger's shapes,
// then a DELETE and a PUT of the same id with another table land before it
// applies them. Sync must not put the old definition back over the new one,
// or the new shape's transactions would be flushed past untracked (I1).
func TestSyncDoesNotRouteAStaleDefinition(t *testing.T) {
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
	if _, _, err := h.CreateShape(ledger.ShapeSpec{ID: "x", Consumer: "c1", Table: "public.t"}); err != nil {
		t.Fatal(err)
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
