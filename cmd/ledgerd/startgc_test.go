package main

import (
	"runtime/debug"
	"testing"
)

// TestPauseGC: the collector is off between pauseGC and its resume, and
// back at the percentage it had after, however many times resume is
// called.
func TestPauseGC(t *testing.T) {
	was := debug.SetGCPercent(150)
	defer debug.SetGCPercent(was)
	resume := pauseGC()
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("GC percent %d while paused, want -1 (off)", got)
	}
	resume()
	debug.SetGCPercent(80) // a change made after the resume stays
	resume()
	if got := debug.SetGCPercent(150); got != 80 {
		t.Fatalf("GC percent %d after a second resume, want 80", got)
	}
}
