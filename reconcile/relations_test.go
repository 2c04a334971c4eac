package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/reconcile"
)

// catalog is a fake Postgres catalog that counts its reads.
type catalog struct {
	mu       sync.Mutex
	rels     map[uint32]reconcile.Relation
	byName   map[string]uint32
	at       ledger.LSN
	err      error
	reads    int
	askedIDs [][]uint32
}

func (c *catalog) Relations(_ context.Context, ids []uint32) (map[uint32]reconcile.Relation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	c.askedIDs = append(c.askedIDs, slices.Clone(ids))
	if c.err != nil {
		return nil, c.err
	}
	out := map[uint32]reconcile.Relation{}
	for _, id := range ids {
		if r, ok := c.rels[id]; ok {
			out[id] = r
		}
	}
	return out, nil
}

func (c *catalog) ResolveTables(_ context.Context, tables []string) (map[string]uint32, ledger.LSN, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	if c.err != nil {
		return nil, 0, c.err
	}
	out := map[string]uint32{}
	for _, t := range tables {
		if id, ok := c.byName[t]; ok {
			out[t] = id
		}
	}
	return out, c.at, nil
}

func (e *env) boundShape(id, consumer, table string, relID uint32, filter map[string][]string) {
	e.t.Helper()
	if _, _, err := e.l.PutShape(ledger.ShapeSpec{ID: id, Consumer: consumer, Table: table, RelID: relID, BoundAt: 0x100, Filter: filter}); err != nil {
		e.t.Fatalf("put shape %s: %v", id, err)
	}
}

// TestRelationCheck: one pass reads the catalog once for the distinct
// relations that have shapes and evicts as relation_changed the shapes
// whose relation was dropped or renamed or lost a filter column, all of
// them at once (not liveness guesses: the circuit breaker, whose floor is
// 10 a minute, does not hold them back). Shapes whose table gained a
// column, or lost one their filter does not name, stay. Shapes recorded
// without a binding are bound by name, or evicted when the name no longer
// resolves. A catalog that cannot be read evicts nothing.
func TestRelationCheck(t *testing.T) {
	cat := &catalog{at: 0x7000}
	e := newEnv(t, func(c *reconcile.Config) { c.Catalog = cat })
	e.register("c", time.Hour)
	var dropped []string
	for i := range 30 {
		id := fmt.Sprintf("dropped-%02d", i)
		dropped = append(dropped, id)
		e.boundShape(id, "c", "public.gone", 1, nil)
	}
	e.boundShape("renamed", "c", "public.orders", 2, nil)
	e.boundShape("col-dropped", "c", "public.items", 3, map[string][]string{"tenant": {"a"}})
	e.boundShape("col-kept", "c", "public.items", 3, map[string][]string{"region": {"eu"}})
	e.boundShape("col-added", "c", "public.other", 4, map[string][]string{"tenant": {"a"}})
	if _, _, err := e.l.PutShape(ledger.ShapeSpec{ID: "unbound", Consumer: "c", Table: "public.other"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.l.PutShape(ledger.ShapeSpec{ID: "unbound-gone", Consumer: "c", Table: "public.vanished"}); err != nil {
		t.Fatal(err)
	}
	cat.rels = map[uint32]reconcile.Relation{
		2: {Table: "public.orders_v2", Columns: []string{"id"}},
		3: {Table: "public.items", Columns: []string{"id", "region"}},
		4: {Table: "public.other", Columns: []string{"id", "tenant", "added"}},
	}
	cat.byName = map[string]uint32{"public.other": 4}

	cat.err = errors.New("connection refused")
	if err := e.r.Pass(context.Background()); err == nil {
		t.Fatal("pass with an unreadable catalog reported no error")
	}
	e.live(append(dropped, "renamed", "col-dropped", "unbound-gone")...)

	cat.err = nil
	cat.reads, cat.askedIDs = 0, nil
	e.pass()
	for _, id := range dropped {
		e.evicted(id, ledger.ReasonRelationChanged, "table public.gone (relation 1) was dropped")
	}
	e.evicted("renamed", ledger.ReasonRelationChanged, "public.orders", "renamed to public.orders_v2")
	e.evicted("col-dropped", ledger.ReasonRelationChanged, "column tenant")
	e.evicted("unbound-gone", ledger.ReasonRelationChanged, "public.vanished no longer exists")
	e.live("col-kept", "col-added", "unbound")
	if sh, _ := e.l.Shape("unbound"); sh.RelID != 4 || sh.BoundAt != 0x7000 {
		t.Errorf("unbound shape bound to relation %d at %s, want 4 at 0/7000", sh.RelID, sh.BoundAt)
	}
	if cat.reads != 2 || len(cat.askedIDs) != 1 || !slices.Equal(cat.askedIDs[0], []uint32{1, 2, 3, 4}) {
		t.Errorf("the pass read the catalog %d times, relations %v; want one resolve and one read of [1 2 3 4]", cat.reads, cat.askedIDs)
	}
	if got := e.metric("ledgerd_reconcile_evictions_total", "reason", "relation_changed"); got != 33 {
		t.Errorf("relation_changed evictions metric = %v, want 33", got)
	}
	if got := e.metric("ledgerd_reconcile_breaker_tripped"); got != 0 {
		t.Errorf("breaker tripped = %v", got)
	}

	// Idempotent: the next pass finds nothing more to do.
	e.pass()
	e.live("col-kept", "col-added", "unbound")
}
