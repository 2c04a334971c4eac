package stream

import (
	"net"
	"testing"
	"time"
)

// shortReads is a connection whose reads return a few bytes at once.
type shortReads struct{ net.Conn }

func (shortReads) Read(p []byte) (int, error) { return copy(p, "0123456789"), nil }

// fakeTime advances by step on every reading of the clock and records sleeps.
type fakeTime struct {
	t      time.Time
	step   time.Duration
	sleeps int
}

func (f *fakeTime) now() time.Time { f.t = f.t.Add(f.step); return f.t }
func (f *fakeTime) sleep(d time.Duration) {
	f.sleeps++
	f.t = f.t.Add(d)
}

func reads(c *coalescingConn, n int) {
	buf := make([]byte, 8192)
	for range n {
		_, _ = c.Read(buf)
	}
}

func TestCoalescingDelaysOnlyDenseTraffic(t *testing.T) {
	dense := &fakeTime{t: time.Unix(0, 0), step: 10 * time.Microsecond}
	c := &coalescingConn{Conn: shortReads{}, now: dense.now, sleep: dense.sleep}
	reads(c, 1+coalesceAfter) // the first read has no predecessor
	if dense.sleeps != 0 {
		t.Fatalf("slept %d times before %d dense reads", dense.sleeps, coalesceAfter)
	}
	reads(c, 100)
	if dense.sleeps != 100 {
		t.Errorf("dense traffic: slept before %d of 100 reads, want all", dense.sleeps)
	}

	sparse := &fakeTime{t: time.Unix(0, 0), step: time.Millisecond}
	c = &coalescingConn{Conn: shortReads{}, now: sparse.now, sleep: sparse.sleep}
	reads(c, 1000)
	if sparse.sleeps != 0 {
		t.Errorf("sparse traffic delayed %d reads", sparse.sleeps)
	}

	// Full reads never need delaying.
	full := &fakeTime{t: time.Unix(0, 0), step: 10 * time.Microsecond}
	c = &coalescingConn{Conn: shortReads{}, now: full.now, sleep: full.sleep}
	buf := make([]byte, 10)
	for range 100 {
		_, _ = c.Read(buf)
	}
	if full.sleeps != 0 {
		t.Errorf("full reads delayed %d times", full.sleeps)
	}
}
