package api_test

import (
	"net/http"
	"testing"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestDeleteShapeRaceWithRecreate: DELETE /v1/shapes/{id} deletes the
// generation whose owner it checked. When that shape is evicted and the id
// created again by another consumer in between, the new shape stays and the
// caller learns that its own shape is gone (I4).
func TestDeleteShapeRaceWithRecreate(t *testing.T) {
	e := newEnv(t)
	mine := e.register("mine")
	e.register("other")
	if _, _, err := e.hub.CreateShape(ledger.ShapeSpec{ID: "s1", Consumer: "mine", Table: "public.orders"}); err != nil {
		t.Fatal(err)
	}
	fired := false
	defer api.SetDeleteShapeHook(func() {
		fired = true
		if _, err := e.l.Evict("s1", ledger.ReasonManual, "operator", "operator"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.hub.CreateShape(ledger.ShapeSpec{ID: "s1", Consumer: "other", Table: "public.items"}); err != nil {
			t.Fatal(err)
		}
	})()
	status, we := e.raw("DELETE", "/v1/shapes/s1", mine.Lease(), "Bearer "+token, "")
	if !fired {
		t.Fatal("the hook did not run")
	}
	sh, ok := e.l.Shape("s1")
	if !ok || sh.Consumer != "other" || sh.Generation != 2 {
		ts, _ := e.l.Tombstone("s1")
		t.Fatalf("after mine's DELETE of its evicted shape, s1 = %+v live %v (tombstone %+v): want other's generation 2 live", sh, ok, ts)
	}
	if status != http.StatusGone || we.Code != wire.CodeShapeGone || we.Reason != string(ledger.ReasonManual) {
		t.Errorf("DELETE answered %d %+v, want 410 %s with reason manual", status, we, wire.CodeShapeGone)
	}
}
