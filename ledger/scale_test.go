package ledger_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/reconcile"
)

// The scale benchmarks hold a million shapes in one process: the ledger, the
// hub with its router and a reconciler over them, as ledgerd runs them.
// 1,000 consumers own 1,000 shapes each, spread over 10 tables, each shape
// filtered on tenant = one of 100 values (1,000 distinct definitions).

const (
	scaleConsumers = 1000
	scaleTables    = 10
	scaleTenants   = 100
	scaleRelBase   = 16384
)

// scaleShapes yields n shapes; with distinct, shape j of consumer c filters
// on a tenant of its own (c*per + j), as the daemon's BenchmarkScale does:
// no two shapes share a definition.
func scaleShapes(n int, distinct bool) func(yield func(ledger.ShapeSpec) bool) {
	per := n / scaleConsumers
	return func(yield func(ledger.ShapeSpec) bool) {
		for c := range scaleConsumers {
			for j := range per {
				t := j % scaleTables
				tenant := fmt.Sprintf("tenant-%03d", (j/scaleTables)%scaleTenants)
				if distinct {
					tenant = fmt.Sprintf("%d", c*per+j)
				}
				spec := ledger.ShapeSpec{ID: fmt.Sprintf("c%04d-s%06d", c, j), Consumer: fmt.Sprintf("c%04d", c),
					Table: fmt.Sprintf("public.t%d", t), RelID: uint32(scaleRelBase + t), BoundAt: 0x80,
					Filter: map[string][]string{"tenant": {tenant}}}
				if !yield(spec) {
					return
				}
			}
		}
	}
}

// scaleCatalog answers the catalog check: every table exists, unchanged.
type scaleCatalog struct{}

func (scaleCatalog) Relations(_ context.Context, ids []uint32) (map[uint32]reconcile.Relation, error) {
	out := make(map[uint32]reconcile.Relation, len(ids))
	for _, id := range ids {
		out[id] = reconcile.Relation{Table: fmt.Sprintf("public.t%d", id-scaleRelBase), Columns: []string{"id", "tenant", "v"}}
	}
	return out, nil
}

func (scaleCatalog) ResolveTables(_ context.Context, tables []string) (map[string]uint32, ledger.LSN, error) {
	out := map[string]uint32{}
	for _, t := range tables {
		var i uint32
		if _, err := fmt.Sscanf(t, "public.t%d", &i); err == nil {
			out[t] = scaleRelBase + i
		}
	}
	return out, 0x80, nil
}

type scale struct {
	l   *ledger.Ledger
	hub *deliver.Hub
	r   *reconcile.Reconciler
	cpu time.Duration // CPU time of the process over the start, GC included
}

// openScale writes a file of n shapes, then opens it as ledgerd starts:
// the ledger, the hub brought in step with it, a reconciler and its first
// pass. It returns what the start took.
func openScale(b *testing.B, n int, distinct bool) (*scale, time.Duration) {
	b.Helper()
	cfg := ledger.Config{Path: filepath.Join(b.TempDir(), "ledger.db"), Logger: zerolog.Nop(),
		Identity: ledger.Identity{SystemID: "7301234567890123456", Timeline: 1, Database: "app", Slot: "ledgerd"}}
	consumers := make([]string, scaleConsumers)
	for i := range consumers {
		consumers[i] = fmt.Sprintf("c%04d", i)
	}
	ledger.BuildFile(b, cfg, consumers, scaleShapes(n, distinct))
	runtime.GC()
	began, cpu0 := time.Now(), cpuTime(b)
	// As ledgerd does, the collector is off until the router is filled.
	gc := debug.SetGCPercent(-1)
	l, err := ledger.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	opened := time.Now()
	hub := deliver.New(deliver.Config{Ledger: l, Logger: zerolog.Nop()})
	hub.Sync()
	debug.SetGCPercent(gc)
	synced := time.Now()
	r, err := reconcile.New(reconcile.Config{Ledger: l, Challenger: hub, Syncer: hub, Catalog: scaleCatalog{},
		Host: "scale-host", Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Pass(context.Background()); err != nil {
		b.Fatal(err)
	}
	took, cpu := time.Since(began), cpuTime(b)-cpu0
	b.Logf("start: open %v, hub sync %v, first pass %v", opened.Sub(began), synced.Sub(opened), time.Since(synced))
	if got := hub.Router().Len(); got != n {
		b.Fatalf("router holds %d shapes, want %d", got, n)
	}
	b.Cleanup(func() {
		hub.Close()
		if err := l.Close(); err != nil {
			b.Error(err)
		}
	})
	return &scale{l: l, hub: hub, r: r, cpu: cpu}, took
}

// BenchmarkScaleHeap1M reports the heap in use after GC per shape with a
// million shapes live in the ledger, the router and the reconciler, and how
// long the start (Open, the hub's first Sync, the first pass) took.
func BenchmarkScaleHeap1M(b *testing.B) { benchScaleHeap(b, scaleN(b), false) }

// BenchmarkScaleHeapDistinct1M is BenchmarkScaleHeap1M with every shape
// filtering on a value of its own: nothing is shared between definitions,
// as in the daemon's BenchmarkScale.
func BenchmarkScaleHeapDistinct1M(b *testing.B) { benchScaleHeap(b, scaleN(b), true) }

// scaleN is the number of shapes of the scale benchmarks: a million, or
// LEDGERD_SCALE_SHAPES (a multiple of 1000) while iterating.
func scaleN(b *testing.B) int {
	v := os.Getenv("LEDGERD_SCALE_SHAPES")
	if v == "" {
		return 1_000_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < scaleConsumers || n%scaleConsumers != 0 {
		b.Fatalf("LEDGERD_SCALE_SHAPES=%q: want a multiple of %d", v, scaleConsumers)
	}
	return n
}

func benchScaleHeap(b *testing.B, n int, distinct bool) {
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		s, took := openScale(b, n, distinct)
		b.StopTimer()
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(n), "B/shape")
		b.ReportMetric(took.Seconds(), "s/start")
		// The CPU time does not move with the load of the machine as
		// the wall time does.
		b.ReportMetric(s.cpu.Seconds(), "cpu-s/start")
		runtime.KeepAlive(s)
		b.StartTimer()
	}
}

// cpuTime is the CPU time the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScalePass1M measures an idle reconcile pass (nothing changed,
// nothing to evict) with a million shapes: the cost paid every interval.
func BenchmarkScalePass1M(b *testing.B) {
	n := scaleN(b)
	s, _ := openScale(b, n, false)
	ctx := context.Background()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for b.Loop() {
		if err := s.r.Pass(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/pass")
	// The process's CPU time (GC included) per pass: at one pass a second,
	// the cores an idle ledgerd of a million shapes keeps busy.
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/pass")
	if got := s.l.Stats().Shapes; got != n {
		b.Fatalf("%d shapes left after idle passes", got)
	}
}

// BenchmarkScaleRegisterDistinct1M creates the shapes of
// BenchmarkScaleHeapDistinct1M as the API does, through the hub (one call
// of each consumer's shapes, one group commit each), and reports the heap
// in use after GC per shape: what a daemon that registered them holds,
// where BenchmarkScaleHeapDistinct1M is what one that restarted holds.
func BenchmarkScaleRegisterDistinct1M(b *testing.B) {
	n := scaleN(b)
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		cfg := ledger.Config{Path: filepath.Join(b.TempDir(), "ledger.db"), Logger: zerolog.Nop(),
			Identity: ledger.Identity{SystemID: "7301234567890123456", Timeline: 1, Database: "app", Slot: "ledgerd"}}
		l, err := ledger.Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		hub := deliver.New(deliver.Config{Ledger: l, Logger: zerolog.Nop()})
		hub.Sync()
		specs := make([][]ledger.ShapeSpec, scaleConsumers)
		for spec := range scaleShapes(n, true) {
			c, _ := strconv.Atoi(spec.Consumer[1:])
			specs[c] = append(specs[c], spec)
		}
		b.StartTimer()
		cpu0 := cpuTime(b)
		for c, batch := range specs {
			if _, err := l.Register(ledger.ConsumerSpec{ID: fmt.Sprintf("c%04d", c), TTL: time.Hour}); err != nil {
				b.Fatal(err)
			}
			res, err := hub.CreateShapes(batch)
			if err != nil || res[len(res)-1].Err != nil {
				b.Fatal(err, res[len(res)-1].Err)
			}
			specs[c] = nil
		}
		cpu := cpuTime(b) - cpu0
		b.StopTimer()
		specs = nil
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(n), "B/shape")
		// Shapes created per second of the process's CPU time, GC
		// included: what does not move with the load of the machine.
		b.ReportMetric(float64(n)/cpu.Seconds(), "shapes/cpu-s")
		hub.Close()
		if err := l.Close(); err != nil {
			b.Error(err)
		}
		b.StartTimer()
	}
}
