package main

import (
	"runtime/debug"
	"sync"
)

// pauseGC turns the garbage collector off while the start reads the
// ledger file and fills the router, and returns the function that turns
// it back on (safe to call more than once). Nearly all the start
// allocates stays live: with a million shapes the collector would mark a
// heap of hundreds of megabytes several times over as it grows, a third of
// the start's CPU time, and free next to nothing. The collection that
// follows runs while the stream starts.
func pauseGC() func() {
	old := debug.SetGCPercent(-1)
	return sync.OnceFunc(func() { debug.SetGCPercent(old) })
}
