package deliver_test

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// TestRelationMessageEvictsBeforeRouting: a relation message showing a
// shape's filter column dropped evicts the shape before its transaction is
// routed (WAL order): the shape is not tracked on it, its consumer gets an
// evicted frame and a txn frame that does not name it, and the shape on
// the same relation whose filter still fits gets the change. A relation
// message of a transaction committed before a shape's binding does not
// judge it: the binding saw a newer catalog.
func TestRelationMessageEvictsBeforeRouting(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c")
	for _, spec := range []ledger.ShapeSpec{
		{ID: "by-tenant", Consumer: "c", Table: "public.t", RelID: 7, BoundAt: 0x500, Filter: map[string][]string{"tenant": {"a"}}},
		{ID: "by-region", Consumer: "c", Table: "public.t", RelID: 7, BoundAt: 0x500, Filter: map[string][]string{"region": {"eu"}}},
		{ID: "bound-later", Consumer: "c", Table: "public.t", RelID: 7, BoundAt: 0x9000, Filter: map[string][]string{"tenant": {"a"}}},
	} {
		sh, _, err := e.l.PutShape(spec)
		if err != nil {
			t.Fatal(err)
		}
		e.hub.PutShape(sh)
	}
	s, stop := e.serve("c")
	defer stop()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		// Frames are queued for an open stream only.
		if st, ok := e.hub.Consumer("c"); ok && st.Streaming {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the change stream did not open")
		}
	}

	ch := insert("public.t", "id", "1", "region", "eu")
	ch.RelID = 7
	tx := txn(0x1000, ch)
	tx.Relations = []stream.Relation{{ID: 7, Table: "public.t", Columns: []string{"id", "region"}}}
	e.handle(tx)

	if _, ok := e.l.Shape("by-tenant"); ok {
		t.Fatal("shape by-tenant is live after its filter column was dropped")
	}
	ts, _ := e.l.Tombstone("by-tenant")
	if ts.Reason != ledger.ReasonRelationChanged || ts.Actor != deliver.ActorStream || !strings.Contains(ts.Evidence, "column tenant") {
		t.Errorf("tombstone %+v, want relation_changed by the stream naming the column", ts)
	}
	for _, id := range []string{"by-region", "bound-later"} {
		if sh, ok := e.l.Shape(id); !ok || sh.PendingLSN != 0x1000 {
			t.Errorf("shape %s: live %v, pending %s; want it live and pending on the transaction", id, ok, sh.PendingLSN)
		}
	}
	var evicted, delivered bool
	for !evicted || !delivered {
		f := s.next(t)
		switch f.Type {
		case wire.FrameEvicted:
			if f.Shape != "by-tenant" || f.Reason != string(ledger.ReasonRelationChanged) {
				t.Fatalf("evicted frame %+v", f)
			}
			evicted = true
		case wire.FrameTxn:
			if got := f.Changes[0].Shapes; !slices.Equal(got, []string{"bound-later", "by-region"}) {
				t.Fatalf("txn frame reaches %v, want [bound-later by-region]", got)
			}
			delivered = true
		}
	}
}

// TestRelationMessageBuildsNothingForFittingShapes: a relation message is
// checked against every shape bound to its relation, and after a start every
// table's first transaction carries one. With tens of thousands of shapes
// on the table and none affected, the check must not build a copy of each
// shape (and sort them) on the stream's path: it allocates next to nothing
// per shape.
func TestRelationMessageBuildsNothingForFittingShapes(t *testing.T) {
	const n = 20_000
	e := newEnv(t, deliver.Config{})
	e.consumer("c")
	specs := make([]ledger.ShapeSpec, n)
	for i := range specs {
		specs[i] = ledger.ShapeSpec{ID: fmt.Sprintf("s%05d", i), Consumer: "c", Table: "public.t", RelID: 7, BoundAt: 0x500,
			Filter: map[string][]string{"tenant": {strconv.Itoa(i)}}}
	}
	res, err := e.l.PutShapes(specs)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		e.hub.PutShape(r.Shape)
	}
	e.handle(txn(0x1000, insert("public.t", "id", "0", "tenant", "none")))

	tx := txn(0x2000, insert("public.t", "id", "1", "tenant", "none"))
	tx.Changes[0].RelID = 7
	tx.Relations = []stream.Relation{{ID: 7, Table: "public.t", Columns: []string{"id", "tenant"}}}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	e.handle(tx)
	runtime.ReadMemStats(&after)
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(n*8); got > limit {
		t.Errorf("handling a relation message over %d fitting shapes allocated %d bytes, want under %d (8 a shape)", n, got, limit)
	}
	if _, ok := e.l.Shape("s00000"); !ok {
		t.Error("a shape whose filter still fits its relation was evicted")
	}
}
