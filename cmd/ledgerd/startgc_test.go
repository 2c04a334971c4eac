package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestPauseGC: the collector is off between pauseGC and its resume, and
// back at the percentage it had after, however many times resume is
// called.
func TestPauseGC(t *testing.T) {
	was := debug.SetGCPercent(150)
	defer debug.SetGCPercent(was)
	resume := pauseGC(0)
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("GC percent %d while paused, want -1 (off)", got)
	}
	resume()
	debug.SetGCPercent(80) // a change made after the resume stays
	resume()
	if got := debug.SetGCPercent(150); got != 80 {
		t.Fatalf("GC percent %d after a second resume, want 80", got)
	}
	// The resume's memory limit lasts until the next collection.
	runtime.GC()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		pct, limit := gcSettings()
		if limit == math.MaxInt64 {
			if pct != 150 {
				t.Fatalf("GC percent %d after the first collection, want 150 as set", pct)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("memory limit %d after the first collection, want none", limit)
		}
	}
}

var gcSink []byte

// TestResumeGCDefersTheFirstCollection: the heap the start built is nearly
// all live, so resuming does not collect at once (the last heap marked being
// the empty one before the start): the first collection comes once the heap
// has grown by the GC percentage of the start's heap, as it would had that
// heap been marked, and after it the percentage and memory limit are back.
func TestResumeGCDefersTheFirstCollection(t *testing.T) {
	was := debug.SetGCPercent(100)
	defer debug.SetGCPercent(was)
	runtime.GC()
	resume := pauseGC(0)
	live, before := startHeap()
	resume()
	if gcs := garbage(16); gcs != before {
		t.Fatalf("%d collections after the resume and 16 MiB of garbage over a 64 MiB start heap, want none yet", gcs-before)
	}
	if garbage(160) == before {
		t.Fatal("no collection once the heap grew past twice the start's")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		pct, limit := gcSettings()
		if pct == 100 && limit == math.MaxInt64 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the first collection: GC percent %d, memory limit %d; want 100 and none", pct, limit)
		}
	}
	runtime.KeepAlive(live)
}

// gcSettings reads the GC percentage and the memory limit without setting
// them.
func gcSettings() (percent, limit int64) {
	ss := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(ss)
	return int64(ss[0].Value.Uint64()), int64(ss[1].Value.Uint64())
}

// TestResumeGCUnderTheFloor: the heap floor raises the GC percent while the
// heap is small; the resume after a start that built a large heap allows it
// to grow by the percent the floor gives that heap (the default's 100), not
// by the small heap's raised percent, which would let it grow several times
// over before the first collection.
func TestResumeGCUnderTheFloor(t *testing.T) {
	was := debug.SetGCPercent(100)
	defer debug.SetGCPercent(was)
	runtime.GC()
	floor := gcFloor(func(string) string { return "" })
	stop := startGCFloor(floor, zerolog.Nop())
	defer stop()
	resume := pauseGC(floor)
	live, before := startHeap()
	resume()
	if garbage(160) == before {
		t.Fatal("no collection once the heap grew past twice the start's 64 MiB, with the heap floor in force")
	}
	runtime.KeepAlive(live)
}

// startHeap builds a live heap of 64 MiB, as a loaded ledger's start
// does, and returns it with the number of collections so far.
func startHeap() ([][]byte, uint32) {
	live := make([][]byte, 0, 64)
	for range cap(live) {
		live = append(live, make([]byte, 1<<20))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return live, ms.NumGC
}

// garbage allocates mib MiB of garbage and returns the number of
// collections so far.
func garbage(mib int) uint32 {
	for range mib {
		gcSink = make([]byte, 1<<20)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.NumGC
}
