package ledger_test

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestRelationsFollowShapes: the relations the catalog check looks at carry
// the union of their shapes' filter columns and their shape count, kept up
// to date as shapes with distinct filters come and go.
func TestRelationsFollowShapes(t *testing.T) {
	l, _, _ := newLedger(t)
	if _, err := l.Register(ledger.ConsumerSpec{ID: "c", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	put := func(id, table string, filter map[string][]string) {
		t.Helper()
		if _, _, err := l.PutShape(ledger.ShapeSpec{ID: id, Consumer: "c", Table: table, Filter: filter}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		put(fmt.Sprintf("t%d", i), "public.orders", map[string][]string{"tenant": {fmt.Sprint(i)}})
	}
	put("r", "public.orders", map[string][]string{"region": {"eu"}, "tenant": {"0"}})
	put("u", "public.users", nil)
	check := func(want map[string]ledger.RelationUse) {
		t.Helper()
		got := l.Relations()
		if len(got) != len(want) {
			t.Fatalf("relations %+v, want %+v", got, want)
		}
		for _, r := range got {
			w := want[r.Table]
			if r.Shapes != w.Shapes || !slices.Equal(r.Columns, w.Columns) {
				t.Errorf("relation %s: %d shapes, columns %v; want %d, %v", r.Table, r.Shapes, r.Columns, w.Shapes, w.Columns)
			}
			if !reflect.DeepEqual(r.Filters, w.Filters) {
				t.Errorf("relation %s: filters %+v, want %+v", r.Table, r.Filters, w.Filters)
			}
		}
	}
	check(map[string]ledger.RelationUse{
		"public.orders": {Shapes: 4, Columns: []string{"region", "tenant"}, Filters: []ledger.FilterUse{
			{Columns: []string{"region", "tenant"}, Shapes: 1},
			{Columns: []string{"tenant"}, Shapes: 3},
		}},
		"public.users": {Shapes: 1, Columns: []string{}},
	})
	for _, id := range []string{"r", "t1", "u"} {
		if _, err := l.Evict(id, ledger.ReasonManual, "test", "test"); err != nil {
			t.Fatal(err)
		}
	}
	check(map[string]ledger.RelationUse{"public.orders": {Shapes: 2, Columns: []string{"tenant"},
		Filters: []ledger.FilterUse{{Columns: []string{"tenant"}, Shapes: 2}}}})
}
