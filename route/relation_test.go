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
