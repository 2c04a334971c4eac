package route_test

import (
	"slices"
	"testing"

	"github.com/ledgerd/ledgerd/route"
	"github.com/ledgerd/ledgerd/stream"
)

// TestRouteByRelationIdentity: a bound shape gets the changes of its
// relation OID, whatever name the relation has; a table dropped and created
// again under the same name is another relation and reaches only the
// shapes bound to it, or not bound at all. Removing a bound shape leaves
// nothing behind.
func TestRouteByRelationIdentity(t *testing.T) {
	r := route.New()
	r.Put(route.Shape{ID: "old", Consumer: "c", Table: "public.orders", RelID: 100, Filter: map[string][]string{"tenant": {"a"}}})
	r.Put(route.Shape{ID: "new", Consumer: "c", Table: "public.orders", RelID: 200})
	r.Put(route.Shape{ID: "unbound", Consumer: "c", Table: "public.orders"})
	ins := func(table string, relID uint32) stream.Change {
		return stream.Change{Op: stream.OpInsert, Table: table, RelID: relID, New: []stream.Column{col("tenant", "a")}}
	}
	for _, tc := range []struct {
		name   string
		change stream.Change
		want   []string
	}{
		{"the old relation", ins("public.orders", 100), []string{"old", "unbound"}},
		{"the relation created again under the name", ins("public.orders", 200), []string{"new", "unbound"}},
		{"the old relation under another name", ins("public.orders_old", 100), []string{"old"}},
		{"a change without a relation id reaches only unbound shapes", ins("public.orders", 0), []string{"unbound"}},
		{"truncate of one relation", stream.Change{Op: stream.OpTruncate, Table: "public.orders", RelID: 200}, []string{"new", "unbound"}},
	} {
		res := r.Route(&stream.Txn{Changes: []stream.Change{tc.change}})
		if !slices.Equal(res.Shapes, tc.want) {
			t.Errorf("%s: routed to %v, want %v", tc.name, res.Shapes, tc.want)
		}
	}
	if got := r.Bound(100); len(got) != 1 || got[0].ID != "old" {
		t.Errorf("Bound(100) = %v, want shape old", got)
	}
	r.Remove("old")
	r.Remove("new")
	if got := r.Bound(100); got != nil {
		t.Errorf("Bound(100) after Remove = %v", got)
	}
	if res := r.Route(&stream.Txn{Changes: []stream.Change{ins("public.orders", 100)}}); !slices.Equal(res.Shapes, []string{"unbound"}) {
		t.Errorf("after Remove routed to %v, want [unbound]", res.Shapes)
	}
}

// TestMisfits: of the shapes bound to a relation, Misfits returns, ordered
// by id, exactly those a relation message no longer fits: all of them when
// the relation was renamed, those filtering on a column it lacks
// otherwise, whichever of their filter's columns that is. Shapes of other
// relations are never named.
func TestMisfits(t *testing.T) {
	r := route.New()
	r.Put(route.Shape{ID: "b-tenant", Consumer: "c", Table: "public.t", RelID: 7, Filter: map[string][]string{"tenant": {"a"}}})
	r.Put(route.Shape{ID: "a-tenant", Consumer: "c", Table: "public.t", RelID: 7, Filter: map[string][]string{"tenant": {"b"}}})
	r.Put(route.Shape{ID: "region-tenant", Consumer: "c", Table: "public.t", RelID: 7, Filter: map[string][]string{"tenant": {"a"}, "region": {"eu"}}})
	r.Put(route.Shape{ID: "all", Consumer: "c", Table: "public.t", RelID: 7})
	r.Put(route.Shape{ID: "other", Consumer: "c", Table: "public.u", RelID: 8, Filter: map[string][]string{"tenant": {"a"}}})
	ids := func(shs []route.Shape) []string {
		var out []string
		for _, sh := range shs {
			out = append(out, sh.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		table   string
		columns []string
		want    []string
	}{
		{"unchanged", "public.t", []string{"id", "tenant", "region"}, nil},
		{"renamed", "public.t2", []string{"id", "tenant", "region"}, []string{"a-tenant", "all", "b-tenant", "region-tenant"}},
		{"tenant dropped", "public.t", []string{"id", "region"}, []string{"a-tenant", "b-tenant", "region-tenant"}},
		{"region dropped", "public.t", []string{"id", "tenant"}, []string{"region-tenant"}},
	} {
		if got := ids(r.Misfits(7, tc.table, tc.columns)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: Misfits = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := r.Misfits(9, "public.t", nil); got != nil {
		t.Errorf("Misfits of a relation without shapes = %v", got)
	}
}
