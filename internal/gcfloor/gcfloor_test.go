package gcfloor_test

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/internal/gcfloor"
)

const mib = 1 << 20

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		live, floor uint64
		want        int
	}{
		{0, 16 * mib, 400},        // before the first collection: the 4 MiB minimum scaled to 16 MiB
		{1 * mib, 16 * mib, 400},  // goal max(5 MiB, 16 MiB)
		{8 * mib, 16 * mib, 200},  // goal 8 + 16 MiB
		{16 * mib, 16 * mib, 100}, // the default from here on
		{64 * mib, 16 * mib, 100},
		{1 * mib, 2 * mib, 100}, // a floor under the runtime's minimum changes nothing
	} {
		if got := gcfloor.Percent(c.live, c.floor); got != c.want {
			t.Errorf("Percent(%d MiB live, %d MiB floor) = %d, want %d", c.live/mib, c.floor/mib, got, c.want)
		}
	}
}

// TestStartFollowsTheLiveHeap runs the real collector: after a collection
// with a small live heap the goal is at least the floor, after one with a
// live heap over the floor the percent is the default again, and stop
// restores the percent in force before Start.
func TestStartFollowsTheLiveHeap(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)

	const floor = 32 * mib
	stop := gcfloor.Start(floor)
	defer stop()
	waitPercent(t, func(p uint64) bool { return p > 100 })
	if goal := read("/gc/heap/goal:bytes"); goal < floor {
		t.Errorf("heap goal %d MiB after a collection of a small heap, want at least the %d MiB floor", goal/mib, floor/mib)
	}

	held := make([]byte, 2*floor)
	waitPercent(t, func(p uint64) bool { return p == 100 })
	runtime.KeepAlive(held)

	stop()
	if p := read("/gc/gogc:percent"); p != 100 {
		t.Errorf("GC percent %d after stop, want the 100 in force before Start", p)
	}
}

// waitPercent collects until the GC percent the tuner set after a
// collection satisfies ok (the tuner runs on the finalizer goroutine, after
// the collection).
func waitPercent(t *testing.T, ok func(uint64) bool) {
	t.Helper()
	for range 5000 {
		runtime.GC()
		if p := read("/gc/gogc:percent"); ok(p) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("GC percent stayed %d", read("/gc/gogc:percent"))
}

func read(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
