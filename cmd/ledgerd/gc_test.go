package main

import (
	"runtime/debug"
	"testing"

	"github.com/rs/zerolog"
)

// TestGCFloor: ledgerd raises the GC percent over the default while its
// heap is small, unless the operator set GOGC.
func TestGCFloor(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)

	stop := startGCFloor(gcFloor(func(string) string { return "" }), zerolog.Nop())
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	stop()
	if p <= 100 {
		t.Errorf("GC percent %d with GOGC unset, want over 100 (a heap floor)", p)
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GC percent %d after stop, want the 100 in force before", p)
	}

	stop = startGCFloor(gcFloor(func(k string) string {
		if k == "GOGC" {
			return "100"
		}
		return ""
	}), zerolog.Nop())
	defer stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GC percent %d with GOGC=100 set, want 100", p)
	}
}
