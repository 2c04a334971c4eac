package ledger_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestPutShapesOneCommit: a thousand shapes put in one call are written by
// one group commit (one fsync), are answered one by one (created, the same
// definition, a conflict, an invalid id), leave one summary event and not
// one per shape, and are all in the file after a restart.
func TestPutShapesOneCommit(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openAt(t, testConfig(path, clk))
	mustRegister(t, l, "c", time.Hour)
	mustShapes(t, l, "c", "old")
	events := len(l.Events(0, 0))

	specs := []ledger.ShapeSpec{
		{ID: "old", Consumer: "c", Table: "public.t"},     // the same definition
		{ID: "old", Consumer: "c", Table: "public.other"}, // another definition
		{ID: "", Consumer: "c", Table: "public.t"},
		{ID: "nobody", Consumer: "ghost", Table: "public.t"},
	}
	for i := range 1000 {
		specs = append(specs, ledger.ShapeSpec{ID: fmt.Sprintf("s%04d", i), Consumer: "c", Table: "public.t",
			Filter: map[string][]string{"tenant": {fmt.Sprint(i % 7)}}})
	}
	specs = append(specs, ledger.ShapeSpec{ID: "s0000", Consumer: "c", Table: "public.t",
		Filter: map[string][]string{"tenant": {"0"}}}) // twice in the call
	before := l.Stats().Commits
	res, err := l.PutShapes(specs)
	if err != nil {
		t.Fatal(err)
	}
	if n := l.Stats().Commits - before; n != 1 {
		t.Errorf("%d group commits for one PutShapes call, want 1", n)
	}
	if r := res[0]; r.Err != nil || r.Created || r.Shape.Generation != 1 {
		t.Errorf("the same definition again: %+v", r)
	}
	if !errors.Is(res[1].Err, ledger.ErrShapeConflict) || !errors.Is(res[2].Err, ledger.ErrInvalid) ||
		!errors.Is(res[3].Err, ledger.ErrNotFound) {
		t.Errorf("refusals: %v / %v / %v, want a conflict, invalid, consumer not found", res[1].Err, res[2].Err, res[3].Err)
	}
	for i, r := range res[4 : 4+1000] {
		if r.Err != nil || !r.Created || r.Shape.Generation != 1 || r.Shape.ID != specs[4+i].ID {
			t.Fatalf("shape %d: %+v", i, r)
		}
	}
	if last := res[len(res)-1]; last.Err != nil || last.Created || last.Shape.ID != "s0000" {
		t.Errorf("an id twice in one call: %+v, want the shape, not created twice", last)
	}
	evs := l.Events(0, 0)
	if len(evs) != events+1 || evs[len(evs)-1].Kind != ledger.EventShapesCreated {
		t.Errorf("journal after creating 1000 shapes: %d new events %v, want one %s", len(evs)-events, kinds(evs[events:]), ledger.EventShapesCreated)
	}
	if got := l.ShapeCount("c"); got != 1001 { // "old" and 1000 new
		t.Errorf("ShapeCount = %d, want 1001", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openAt(t, testConfig(path, clk))
	if got := len(l.Shapes()); got != 1001 {
		t.Fatalf("%d shapes after a restart, want 1001", got)
	}
	if sh, ok := l.Shape("s0006"); !ok || sh.Filter["tenant"][0] != "6" {
		t.Fatalf("s0006 after a restart: %+v", sh)
	}
}

// BenchmarkPutShapes measures the ledger's part of shape registration: a
// million shapes over 1000 consumers created in calls of 1000 (one group
// commit each), as the batch call of the API makes them. With ids=consumer
// a shape's id starts with its consumer's ("c0042:s0001234"), so one call's
// shapes are neighbours in the file; with ids=spread they are spread over
// the whole key space and each call rewrites about one page per shape.
func BenchmarkPutShapes(b *testing.B) {
	const consumers, per = 1000, 1000
	for _, layout := range []string{"consumer", "spread"} {
		b.Run("ids="+layout, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				clk := newClock()
				l := openAt(b, testConfig(filepath.Join(b.TempDir(), "ledger.db"), clk))
				for c := range consumers {
					mustRegister(b, l, fmt.Sprintf("c%04d", c), time.Hour)
				}
				calls := make([][]ledger.ShapeSpec, consumers)
				for k := range consumers * per {
					c := k % consumers
					id := fmt.Sprintf("s%07d", k)
					if layout == "consumer" {
						id = fmt.Sprintf("c%04d:s%07d", c, k)
					}
					calls[c] = append(calls[c], ledger.ShapeSpec{ID: id, Consumer: fmt.Sprintf("c%04d", c),
						Table: fmt.Sprintf("public.t%d", k%10), Filter: map[string][]string{"tenant": {fmt.Sprint(k / 10)}}})
				}
				b.StartTimer()
				began := time.Now()
				for _, specs := range calls {
					if _, err := l.PutShapes(specs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(consumers*per)/time.Since(began).Seconds(), "shapes/s")
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestShapeDefIsShapeWithoutMap: ShapeDef answers what Shape answers but
// the filter map, which its Def builds; PutShapes' answers are the same.
func TestShapeDefIsShapeWithoutMap(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", time.Hour)
	spec := ledger.ShapeSpec{ID: "s", Consumer: "c", Table: "public.t", Filter: map[string][]string{"tenant": {"b", "a"}}}
	res, err := l.PutShapes([]ledger.ShapeSpec{spec})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res[0].Err)
	}
	sh, _ := l.Shape("s")
	def, ok := l.ShapeDef("s")
	if !ok || def.Filter != nil || res[0].Shape.Filter != nil {
		t.Fatalf("ShapeDef %v (filter %v), PutShapes answer filter %v: want no map", ok, def.Filter, res[0].Shape.Filter)
	}
	if !reflect.DeepEqual(def.Def.Filter(), sh.Filter) || !reflect.DeepEqual(sh.Filter, map[string][]string{"tenant": {"a", "b"}}) {
		t.Fatalf("Def.Filter() %v, Shape's filter %v", def.Def.Filter(), sh.Filter)
	}
	def.Filter = sh.Filter
	if !reflect.DeepEqual(def, sh) || !reflect.DeepEqual(res[0].Shape.Def, sh.Def) {
		t.Fatalf("ShapeDef %+v differs from Shape %+v", def, sh)
	}
	if _, ok := l.ShapeDef("none"); ok {
		t.Fatal("ShapeDef found a shape never created")
	}
}
