package main

import (
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/ledgerd/ledgerd/internal/gcfloor"
)

// pauseGC turns the garbage collector off while the start reads the
// ledger file and fills the router, and returns the function that turns
// it back on (safe to call more than once). Nearly all the start
// allocates stays live: with a million shapes the collector would mark a
// heap of hundreds of megabytes several times over as it grows, a third of
// the start's CPU time, and free next to nothing.
//
// For the same reason the resume does not collect at once, as setting the
// percentage back would (the last heap marked is the empty one before the
// start): that collection would mark the whole start heap while the stream
// delivers what waited in the slot, half a core for most of a second at a
// million shapes, and free next to nothing. The collector stays off under a
// soft memory limit that leaves the heap room to grow by the GC percentage
// of what the start built, the goal it would have had were that heap
// marked; once that first collection has run, the percentage and the limit
// are back as they were. A lower limit set by GOMEMLIMIT is kept.
//
// floor is the heap floor in force (gcFloor), 0 for none. The floor raises
// the GC percent while the heap is small; the growth allowed after the
// start is the percent the floor gives the heap the start built.
func pauseGC(floor uint64) func() {
	old := debug.SetGCPercent(-1)
	return sync.OnceFunc(func() { resumeGC(old, floor) })
}

// gcSentinel is collected by the first collection after the resume; its
// cleanup sets the collector back. Large enough to have its own slot.
type gcSentinel struct {
	_ *byte
	_ [16]byte
}

func resumeGC(old int, floor uint64) {
	if old < 0 {
		debug.SetGCPercent(old) // off before the pause: off it stays
		return
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	prevLimit := debug.SetMemoryLimit(-1)
	// The memory limit counts all the runtime holds, not only the heap.
	pct := old
	if floor > 0 {
		pct = gcfloor.Percent(ms.HeapAlloc, floor)
	}
	limit := int64(ms.Sys-ms.HeapReleased) + int64(float64(ms.HeapAlloc)*float64(pct)/100)
	if limit >= prevLimit {
		debug.SetGCPercent(old)
		return
	}
	debug.SetMemoryLimit(limit)
	runtime.AddCleanup(new(gcSentinel), func(struct{}) {
		// Leave what something else set meanwhile as it is.
		if pct := debug.SetGCPercent(old); pct != -1 {
			debug.SetGCPercent(pct)
		}
		if cur := debug.SetMemoryLimit(prevLimit); cur != limit {
			debug.SetMemoryLimit(cur)
		}
	}, struct{}{})
}
