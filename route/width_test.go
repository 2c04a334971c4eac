package route_test

import (
	"fmt"
	"testing"

	"github.com/ledgerd/ledgerd/route"
	"github.com/ledgerd/ledgerd/stream"
)

// wideShapes returns n shapes on public.t whose filters each list width
// columns c00000.. with the one value "v".
func wideShapes(n, width int) []route.Shape {
	shapes := make([]route.Shape, n)
	for i := range shapes {
		f := make(map[string][]string, width)
		for c := range width {
			f[fmt.Sprintf("c%05d", c)] = []string{"v"}
		}
		shapes[i] = route.Shape{ID: fmt.Sprintf("s%03d", i), Consumer: "c", Table: "public.t", Filter: f}
	}
	return shapes
}

// wideTxn is a transaction of rows changes on public.t, each a row of a few
// columns, two of them named by the wide filters.
func wideTxn(rows int) *stream.Txn {
	txn := &stream.Txn{}
	for i := range rows {
		txn.Changes = append(txn.Changes, stream.Change{Op: stream.OpInsert, Table: "public.t",
			New: []stream.Column{col("id", fmt.Sprint(i)), col("c00000", "v"), col("c00001", "v"), col("payload", "x")}})
	}
	return txn
}

// TestRouteCostIndependentOfFilterWidth routes the same transaction to
// shapes with narrow and with very wide filters: the column comparisons
// Route makes must not grow with the number of columns a filter lists, or a
// few wide shapes make every transaction on their table slow.
func TestRouteCostIndependentOfFilterWidth(t *testing.T) {
	probes := map[int]uint64{}
	for _, width := range []int{16, 10000} {
		r := route.New()
		for _, s := range wideShapes(20, width) {
			r.Put(s)
		}
		txn := wideTxn(10)
		before := r.Probes()
		res := r.Route(txn)
		probes[width] = r.Probes() - before
		if len(res.Shapes) != 20 {
			t.Fatalf("width %d: txn reaches %d shapes, want 20", width, len(res.Shapes))
		}
		for i, ids := range res.Changes {
			if len(ids) != 20 {
				t.Fatalf("width %d: change %d reaches %d shapes, want 20", width, i, len(ids))
			}
		}
	}
	if probes[10000] != probes[16] {
		t.Errorf("routing compared %d columns with 10000-column filters and %d with 16-column ones; want the same",
			probes[10000], probes[16])
	}
	// Each shape is checked against each of the row's 4 columns at most a
	// couple of times.
	if limit := uint64(10 * 20 * 4 * 2); probes[16] > limit {
		t.Errorf("routing 10 rows to 20 shapes compared %d columns, want at most %d", probes[16], limit)
	}
}

// BenchmarkRouteWideFilters routes a 200-row transaction to 100 shapes whose
// filters list 10,000 one-value columns each.
func BenchmarkRouteWideFilters(b *testing.B) {
	r := route.New()
	for _, s := range wideShapes(100, 10000) {
		r.Put(s)
	}
	txn := wideTxn(200)
	b.ReportAllocs()
	for b.Loop() {
		r.Route(txn)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txns/s")
}
