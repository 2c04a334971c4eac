// Package gcfloor keeps the garbage collector from running more often
// than a small heap needs.
//
// With the runtime's default (GOGC=100) a collection starts once the heap
// has grown by as much as was live after the previous one, and never below
// 4 MiB. ledgerd's live heap is a few megabytes while it catches up on a
// backlog, and it allocates for every transaction it decodes, routes and
// frames: it collected about 50 times per 100,000 single-row transactions,
// each collection waking the runtime's mark workers on the other threads
// (BenchmarkEndToEnd's Unix-socket case: 9% of the daemon's CPU time).
//
// Start sets the GC percent after each collection so that the heap goal is
// at least Floor bytes, and the live heap plus Floor while the live heap is
// between 4 MiB and Floor; once the live heap passes Floor the default
// applies again, so a daemon holding a full outbox keeps the default's
// memory use. A memory limit (GOMEMLIMIT) still caps the goal.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// DefaultFloor is the least heap goal ledgerd runs with: a few times the
// live heap of a daemon streaming a backlog, and small next to the memory
// its outbox may hold (-outbox-bytes, 64 MiB by default).
const DefaultFloor = 16 << 20

// minHeap is the runtime's least heap goal at GOGC=100; it scales with the
// GC percent.
const minHeap = 4 << 20

// Percent returns the GC percent that gives a heap goal of at least floor
// for a heap of live bytes after a collection: the runtime's goal is the
// larger of live*(1+percent/100) and minHeap*percent/100.
func Percent(live, floor uint64) int {
	p := floor * 100 / max(live, minHeap)
	return int(max(p, 100))
}

// Start sets the GC percent for floor now and after every collection,
// until stop is called, which restores the percent in force before. The
// percent is the process's: while one Start runs, another does nothing
// and its stop neither.
func Start(floor uint64) (stop func()) {
	active.Lock()
	defer active.Unlock()
	if active.on {
		return func() {}
	}
	active.on = true
	t := &tuner{floor: floor, samples: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.last = Percent(0, floor)
	t.prev = debug.SetGCPercent(t.last)
	t.arm()
	return t.stop
}

// active is whether a tuner runs.
var active struct {
	sync.Mutex
	on bool
}

type tuner struct {
	floor   uint64
	prev    int
	mu      sync.Mutex // stop against a tune on the finalizer goroutine
	stopped bool
	samples []metrics.Sample
	last    int
}

// sentinel is garbage as soon as it is made: its finalizer runs once after
// the next collection. It holds a pointer, so that it is not batched with
// other small allocations (whose finalizers may wait for their neighbours).
type sentinel struct{ t *tuner }

func (t *tuner) arm() {
	runtime.SetFinalizer(&sentinel{t: t}, func(s *sentinel) { s.t.tune() })
}

// tune runs on the finalizer goroutine after a collection.
func (t *tuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	metrics.Read(t.samples)
	var live uint64
	if v := t.samples[0].Value; v.Kind() == metrics.KindUint64 {
		live = v.Uint64()
	}
	if p := Percent(live, t.floor); p != t.last {
		debug.SetGCPercent(p)
		t.last = p
	}
	t.arm()
}

func (t *tuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(t.prev)
		active.Lock()
		active.on = false
		active.Unlock()
	}
}
