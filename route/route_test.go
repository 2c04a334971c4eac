package route_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/route"
	"github.com/ledgerd/ledgerd/stream"
)

func col(name, value string) stream.Column { return stream.Column{Name: name, Value: value} }
func null(name string) stream.Column       { return stream.Column{Name: name, Kind: stream.KindNull} }
func toast(name string) stream.Column      { return stream.Column{Name: name, Kind: stream.KindUnchanged} }

func testShapes() []route.Shape {
	return []route.Shape{
		{ID: "all-orders", Consumer: "c1", Table: "public.orders"},
		{ID: "tenant-a", Consumer: "c1", Table: "public.orders", Filter: map[string][]string{"tenant": {"a"}}},
		{ID: "tenant-ab-eu", Consumer: "c2", Table: "public.orders", Filter: map[string][]string{"tenant": {"a", "b"}, "region": {"eu"}}},
		{ID: "region-us", Consumer: "c2", Table: "public.orders", Filter: map[string][]string{"region": {"us"}}},
		{ID: "items", Consumer: "c3", Table: "public.items"},
		{ID: "other-schema", Consumer: "c3", Table: "app.orders"},
	}
}

func TestRouteChange(t *testing.T) {
	tests := []struct {
		name   string
		change stream.Change
		want   []string
	}{
		{"insert matching one tenant", stream.Change{Op: stream.OpInsert, Table: "public.orders",
			New: []stream.Column{col("id", "1"), col("tenant", "a"), col("region", "us")}},
			[]string{"all-orders", "region-us", "tenant-a"}},
		{"insert matching both columns of a filter", stream.Change{Op: stream.OpInsert, Table: "public.orders",
			New: []stream.Column{col("id", "1"), col("tenant", "b"), col("region", "eu")}},
			[]string{"all-orders", "tenant-ab-eu"}},
		{"insert matching only the unfiltered shape", stream.Change{Op: stream.OpInsert, Table: "public.orders",
			New: []stream.Column{col("id", "1"), col("tenant", "c"), col("region", "eu")}},
			[]string{"all-orders"}},
		{"value compared on its exact text form", stream.Change{Op: stream.OpInsert, Table: "public.orders",
			New: []stream.Column{col("tenant", "A"), col("region", "eu ")}},
			[]string{"all-orders"}},
		{"null matches no listed value", stream.Change{Op: stream.OpInsert, Table: "public.orders",
			New: []stream.Column{null("tenant"), null("region")}},
			[]string{"all-orders"}},
		{"absent filter column over-delivers", stream.Change{Op: stream.OpInsert, Table: "public.orders",
			New: []stream.Column{col("id", "1")}},
			[]string{"all-orders", "region-us", "tenant-a", "tenant-ab-eu"}},
		{"absent column delivers only if the present ones match", stream.Change{Op: stream.OpInsert, Table: "public.orders",
			New: []stream.Column{col("tenant", "b")}},
			[]string{"all-orders", "region-us", "tenant-ab-eu"}},
		{"unchanged toast value counts as absent", stream.Change{Op: stream.OpUpdate, Table: "public.orders",
			New: []stream.Column{col("id", "1"), toast("tenant"), col("region", "eu")}},
			[]string{"all-orders", "tenant-a", "tenant-ab-eu"}},
		{"update matches on the new row", stream.Change{Op: stream.OpUpdate, Table: "public.orders",
			New: []stream.Column{col("id", "1"), col("tenant", "a"), col("region", "eu")}},
			[]string{"all-orders", "tenant-a", "tenant-ab-eu"}},
		{"update moving a row out of a filter also reaches the old one", stream.Change{Op: stream.OpUpdate, Table: "public.orders",
			New: []stream.Column{col("id", "1"), col("tenant", "c"), col("region", "eu")},
			Old: []stream.Column{col("id", "1"), col("tenant", "a"), col("region", "eu")}},
			[]string{"all-orders", "tenant-a", "tenant-ab-eu"}},
		{"delete matches on the old key only", stream.Change{Op: stream.OpDelete, Table: "public.orders",
			Old: []stream.Column{col("id", "1")}},
			[]string{"all-orders", "region-us", "tenant-a", "tenant-ab-eu"}},
		{"delete with a full old row is filtered", stream.Change{Op: stream.OpDelete, Table: "public.orders",
			Old: []stream.Column{col("id", "1"), col("tenant", "z"), col("region", "us")}},
			[]string{"all-orders", "region-us"}},
		{"truncate reaches every shape on the table", stream.Change{Op: stream.OpTruncate, Table: "public.orders"},
			[]string{"all-orders", "region-us", "tenant-a", "tenant-ab-eu"}},
		{"same table name in another schema is another table", stream.Change{Op: stream.OpInsert, Table: "app.orders",
			New: []stream.Column{col("tenant", "a")}},
			[]string{"other-schema"}},
		{"untracked table reaches nothing", stream.Change{Op: stream.OpInsert, Table: "public.audit",
			New: []stream.Column{col("tenant", "a")}},
			nil},
		{"truncate of an untracked table reaches nothing", stream.Change{Op: stream.OpTruncate, Table: "public.audit"},
			nil},
	}
	r := route.New()
	for _, s := range testShapes() {
		r.Put(s)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := r.Route(&stream.Txn{Changes: []stream.Change{tc.change}})
			if !slices.Equal(res.Changes[0], tc.want) {
				t.Errorf("change reaches %v, want %v", res.Changes[0], tc.want)
			}
			if !slices.Equal(res.Shapes, tc.want) {
				t.Errorf("txn reaches %v, want %v", res.Shapes, tc.want)
			}
		})
	}
}

// TestRouteOldTupleKinds: the changes the decoder makes of a key-only old
// tuple (replica identity DEFAULT or USING INDEX), of a missing one and of an
// unchanged TOAST value reach every filtered shape whose filter columns they
// lack (over-delivery, never under-delivery: I1), and Result.Absent names the
// shapes reached only that way. A full old row is filtered as usual.
func TestRouteOldTupleKinds(t *testing.T) {
	key := func(cols ...stream.Column) []stream.Column { return cols }
	tests := []struct {
		name   string
		change stream.Change
		want   []string
		absent []string
	}{
		{"key-only delete reaches every filtered shape", stream.Change{Op: stream.OpDelete, Table: "public.orders",
			Old: key(col("id", "2")), OldKind: stream.TupleKey},
			[]string{"all-orders", "region-us", "tenant-a", "tenant-ab-eu"}, []string{"region-us", "tenant-a", "tenant-ab-eu"}},
		{"key-only delete whose key holds a filter column is filtered on it", stream.Change{Op: stream.OpDelete, Table: "public.orders",
			Old: key(col("region", "eu")), OldKind: stream.TupleKey},
			[]string{"all-orders", "tenant-a", "tenant-ab-eu"}, []string{"tenant-a", "tenant-ab-eu"}},
		{"delete without an old tuple reaches every shape", stream.Change{Op: stream.OpDelete, Table: "public.orders"},
			[]string{"all-orders", "region-us", "tenant-a", "tenant-ab-eu"}, []string{"region-us", "tenant-a", "tenant-ab-eu"}},
		{"full delete is filtered", stream.Change{Op: stream.OpDelete, Table: "public.orders",
			Old: key(col("id", "2"), col("tenant", "b"), col("region", "us")), OldKind: stream.TupleFull},
			[]string{"all-orders", "region-us"}, nil},
		{"key-changing update: new row filtered, key-only old row reaches the rest", stream.Change{Op: stream.OpUpdate, Table: "public.orders",
			New: key(col("id", "3"), col("tenant", "a"), col("region", "us")), Old: key(col("id", "2")), OldKind: stream.TupleKey},
			[]string{"all-orders", "region-us", "tenant-a", "tenant-ab-eu"}, []string{"tenant-ab-eu"}},
		{"update without an old tuple matches on the new row", stream.Change{Op: stream.OpUpdate, Table: "public.orders",
			New: key(col("id", "3"), col("tenant", "c"), col("region", "eu"))},
			[]string{"all-orders"}, nil},
		{"unchanged toast value in a filter column is absent", stream.Change{Op: stream.OpUpdate, Table: "public.orders",
			New: key(col("id", "3"), toast("tenant"), col("region", "us"))},
			[]string{"all-orders", "region-us", "tenant-a"}, []string{"tenant-a"}},
		{"insert is never absent", stream.Change{Op: stream.OpInsert, Table: "public.orders",
			New: key(col("id", "1"), col("tenant", "a"), col("region", "eu"))},
			[]string{"all-orders", "tenant-a", "tenant-ab-eu"}, nil},
		{"truncate reaches every shape, none by absence", stream.Change{Op: stream.OpTruncate, Table: "public.orders"},
			[]string{"all-orders", "region-us", "tenant-a", "tenant-ab-eu"}, nil},
	}
	r := route.New()
	for _, s := range testShapes() {
		r.Put(s)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := r.Route(&stream.Txn{Changes: []stream.Change{tc.change}})
			if !slices.Equal(res.Changes[0], tc.want) {
				t.Errorf("change reaches %v, want %v", res.Changes[0], tc.want)
			}
			var absent []string
			if res.Absent != nil {
				absent = res.Absent[0]
			}
			if !slices.Equal(absent, tc.absent) {
				t.Errorf("reached by an absent filter column: %v, want %v", absent, tc.absent)
			}
		})
	}
}

func TestRouteTxnUnion(t *testing.T) {
	r := route.New()
	for _, s := range testShapes() {
		r.Put(s)
	}
	txn := &stream.Txn{Changes: []stream.Change{
		{Op: stream.OpInsert, Table: "public.orders", New: []stream.Column{col("tenant", "a"), col("region", "us")}},
		{Op: stream.OpInsert, Table: "public.audit", New: []stream.Column{col("x", "1")}},
		{Op: stream.OpDelete, Table: "public.items", Old: []stream.Column{col("id", "9")}},
	}}
	res := r.Route(txn)
	if want := []string{"all-orders", "items", "region-us", "tenant-a"}; !slices.Equal(res.Shapes, want) {
		t.Errorf("union %v, want %v", res.Shapes, want)
	}
	if res.Changes[1] != nil {
		t.Errorf("untracked change reaches %v, want none", res.Changes[1])
	}
	if want := []string{"items"}; !slices.Equal(res.Changes[2], want) {
		t.Errorf("third change reaches %v, want %v", res.Changes[2], want)
	}
}

func TestPutReplaceAndRemove(t *testing.T) {
	r := route.New()
	r.Put(route.Shape{ID: "s", Consumer: "c", Table: "public.t", Filter: map[string][]string{"k": {"1"}}})
	ins := func(v string) []string {
		return r.Route(&stream.Txn{Changes: []stream.Change{{Op: stream.OpInsert, Table: "public.t",
			New: []stream.Column{col("k", v)}}}}).Shapes
	}
	if got := ins("1"); !slices.Equal(got, []string{"s"}) {
		t.Fatalf("k=1 reaches %v", got)
	}
	// Redefining the shape must drop the old index entries.
	r.Put(route.Shape{ID: "s", Consumer: "c", Table: "public.t", Filter: map[string][]string{"k": {"2"}}})
	if got := ins("1"); got != nil {
		t.Errorf("after redefinition k=1 reaches %v, want none", got)
	}
	if got := ins("2"); !slices.Equal(got, []string{"s"}) {
		t.Errorf("after redefinition k=2 reaches %v", got)
	}
	if c := r.Consumer("s"); c != "c" {
		t.Errorf("Consumer(s) = %q", c)
	}
	r.Remove("s")
	r.Remove("s") // twice is harmless
	if got := ins("2"); got != nil {
		t.Errorf("after Remove k=2 reaches %v", got)
	}
	if r.Len() != 0 || len(r.IDs()) != 0 {
		t.Errorf("router keeps %d shapes after Remove", r.Len())
	}
	if _, ok := r.Shape("s"); ok {
		t.Error("Shape(s) found after Remove")
	}
}

// reference is the obvious, unindexed rule of docs/api.md, "Routing".
func reference(shapes []route.Shape, ch stream.Change) []string {
	var out []string
	for _, s := range shapes {
		if s.Table != ch.Table {
			continue
		}
		if ch.Op == stream.OpTruncate {
			out = append(out, s.ID)
			continue
		}
		rows := [][]stream.Column{ch.New}
		if ch.Op == stream.OpDelete {
			rows = [][]stream.Column{ch.Old}
		} else if ch.Op == stream.OpUpdate && ch.Old != nil {
			rows = append(rows, ch.Old)
		}
		for _, row := range rows {
			ok := true
			for name, vals := range s.Filter {
				for _, c := range row {
					if c.Name != name || c.Kind == stream.KindUnchanged {
						continue
					}
					if c.Kind == stream.KindNull || !slices.Contains(vals, c.Value) {
						ok = false
					}
				}
			}
			if ok {
				out = append(out, s.ID)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestRouteMatchesReference compares the index with the plain rule on
// random shapes and changes, with shapes added and removed in between.
func TestRouteMatchesReference(t *testing.T) {
	// Rows of 3 columns are scanned; rows of 12 are looked up through a map,
	// and filters wider than a row are checked by walking the row.
	for _, width := range []int{3, 12} {
		t.Run(fmt.Sprintf("%d columns", width), func(t *testing.T) { testRouteMatchesReference(t, width) })
	}
}

func testRouteMatchesReference(t *testing.T, width int) {
	rng := rand.New(rand.NewPCG(1, uint64(width)))
	tables := []string{"public.a", "public.b", "s.c"}
	var cols []string
	for i := range width {
		cols = append(cols, fmt.Sprintf("k%d", i+1))
	}
	vals := []string{"x", "y", "z", ""}
	randShape := func(i int) route.Shape {
		s := route.Shape{ID: fmt.Sprintf("s%03d", i), Consumer: "c", Table: tables[rng.IntN(len(tables))]}
		for _, c := range cols {
			if rng.IntN(2) == 0 {
				continue
			}
			if s.Filter == nil {
				s.Filter = map[string][]string{}
			}
			n := 1 + rng.IntN(2)
			for range n {
				s.Filter[c] = append(s.Filter[c], vals[rng.IntN(len(vals))])
			}
		}
		return s
	}
	randRow := func() []stream.Column {
		var row []stream.Column
		for _, c := range cols {
			switch rng.IntN(5) {
			case 0: // absent
			case 1:
				row = append(row, null(c))
			case 2:
				row = append(row, toast(c))
			default:
				row = append(row, col(c, vals[rng.IntN(len(vals))]))
			}
		}
		return row
	}
	ops := []stream.Op{stream.OpInsert, stream.OpUpdate, stream.OpDelete, stream.OpTruncate}
	r := route.New()
	live := map[string]route.Shape{}
	for i := range 60 {
		s := randShape(i)
		r.Put(s)
		live[s.ID] = s
	}
	for round := range 2000 {
		if round%50 == 0 { // churn: redefine one, remove one
			s := randShape(rng.IntN(80))
			r.Put(s)
			live[s.ID] = s
			id := fmt.Sprintf("s%03d", rng.IntN(80))
			r.Remove(id)
			delete(live, id)
		}
		ch := stream.Change{Op: ops[rng.IntN(len(ops))], Table: tables[rng.IntN(len(tables))]}
		switch ch.Op {
		case stream.OpInsert:
			ch.New = randRow()
		case stream.OpUpdate:
			ch.New = randRow()
			if rng.IntN(2) == 0 {
				ch.Old = randRow()
			}
		case stream.OpDelete:
			ch.Old = randRow()
		}
		var shapes []route.Shape
		for _, s := range live {
			shapes = append(shapes, s)
		}
		want := reference(shapes, ch)
		got := r.Route(&stream.Txn{Changes: []stream.Change{ch}}).Changes[0]
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: %+v reaches %v, reference says %v", round, ch, got, want)
		}
	}
}

func BenchmarkRoute1000Shapes(b *testing.B) {
	r := route.New()
	for i := range 1000 {
		r.Put(route.Shape{ID: fmt.Sprintf("s%04d", i), Consumer: fmt.Sprintf("c%d", i%8),
			Table:  fmt.Sprintf("public.t%d", i%10),
			Filter: map[string][]string{"tenant": {fmt.Sprintf("tenant%d", i/10)}}})
	}
	txn := &stream.Txn{Changes: []stream.Change{{Op: stream.OpInsert, Table: "public.t3",
		New: []stream.Column{col("id", "1"), col("tenant", "tenant42"), col("payload", "xxxxxxxx")}}}}
	b.ReportAllocs()
	for b.Loop() {
		r.Route(txn)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txns/s")
}

// TestSharedValueRemoval: shapes allowing the same single value share one
// list in the index; removing the first, a middle and the last of them
// leaves the others routed, and removing every one leaves nothing behind.
func TestSharedValueRemoval(t *testing.T) {
	r := route.New()
	var ids []string
	for i := range 5 {
		id := fmt.Sprintf("s%d", i)
		ids = append(ids, id)
		r.Put(route.Shape{ID: id, Consumer: "c", Table: "public.t", Filter: map[string][]string{"tenant": {"a"}}})
	}
	txn := &stream.Txn{Changes: []stream.Change{{Op: stream.OpInsert, Table: "public.t", New: []stream.Column{col("tenant", "a")}}}}
	for _, id := range []string{"s4", "s2", "s0"} { // s4 went in last: the list's head
		r.Remove(id)
		ids = slices.DeleteFunc(ids, func(s string) bool { return s == id })
		if got := r.Route(txn).Shapes; !slices.Equal(got, ids) {
			t.Fatalf("after removing %s the row reaches %v, want %v", id, got, ids)
		}
	}
	r.Put(route.Shape{ID: "s1", Consumer: "c", Table: "public.t", Filter: map[string][]string{"tenant": {"b"}}})
	if got := r.Route(txn).Shapes; !slices.Equal(got, []string{"s3"}) {
		t.Fatalf("after redefining s1 the row reaches %v, want [s3]", got)
	}
	r.Remove("s1")
	r.Remove("s3")
	if got := r.Route(txn).Shapes; len(got) != 0 || r.Len() != 0 {
		t.Fatalf("with every shape removed the row reaches %v, %d routed", got, r.Len())
	}
}

// TestPutAllLarge: a large fill (as at start), with ids given twice (the
// second definition wins) and filters of every kind, routes as the plain
// rule says, and removals from it leave the rest routed.
func TestPutAllLarge(t *testing.T) {
	const n = 40_000
	rng := rand.New(rand.NewPCG(3, 4))
	shape := func(i int) route.Shape {
		s := route.Shape{ID: fmt.Sprintf("s%05d", i%(n-1000)), Consumer: fmt.Sprintf("c%d", i%7), Table: fmt.Sprintf("public.t%d", i%3)}
		switch rng.IntN(5) {
		case 0: // no filter
		case 1:
			s.Filter = map[string][]string{"k": {fmt.Sprint(rng.IntN(50)), fmt.Sprint(rng.IntN(50))}}
		case 2:
			s.Filter = map[string][]string{"k": {fmt.Sprint(rng.IntN(50))}, "j": {"x"}}
		default:
			s.Filter = map[string][]string{"k": {fmt.Sprint(rng.IntN(50))}}
		}
		return s
	}
	final := map[string]route.Shape{}
	var all []route.Shape
	for i := range n {
		s := shape(i)
		all = append(all, s)
		final[s.ID] = s
	}
	r := route.New()
	r.PutAll(n, slices.Values(all))
	if r.Len() != len(final) {
		t.Fatalf("%d shapes routed, want %d", r.Len(), len(final))
	}
	var live []route.Shape
	for _, s := range final {
		live = append(live, s)
	}
	for v := range 50 {
		for _, j := range []string{"x", "y"} {
			ch := stream.Change{Op: stream.OpInsert, Table: "public.t1",
				New: []stream.Column{col("k", fmt.Sprint(v)), col("j", j)}}
			want := reference(live, ch)
			if got := r.Route(&stream.Txn{Changes: []stream.Change{ch}}).Changes[0]; !slices.Equal(got, want) {
				t.Fatalf("k=%d j=%s reaches %d shapes, the plain rule %d", v, j, len(got), len(want))
			}
		}
	}
	for _, s := range live[:100] {
		r.Remove(s.ID)
	}
	if r.Len() != len(final)-100 {
		t.Fatalf("%d shapes routed after removing 100, want %d", r.Len(), len(final)-100)
	}
}

// BenchmarkPutAll1M fills an empty router with a million shapes as the
// daemon's start does: ten tables, every shape filtering on a tenant of its
// own, definitions made beforehand (the ledger's). Run it with GOGC=off, as
// the start runs.
func BenchmarkPutAll1M(b *testing.B) {
	const n = 1_000_000
	all := make([]route.Shape, n)
	for k := range all {
		table := fmt.Sprintf("public.t%d", k%10)
		all[k] = route.Shape{ID: fmt.Sprintf("c%d:s%07d", k%1000, k), Consumer: fmt.Sprintf("c%d", k%1000), Table: table,
			Def: ledger.NewDef(table, 0, map[string][]string{"tenant": {fmt.Sprint(k / 10)}})}
	}
	for b.Loop() {
		r := route.New()
		r.PutAll(n, slices.Values(all))
		if r.Len() != n {
			b.Fatalf("%d routed", r.Len())
		}
	}
}
