package main

import (
	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/internal/gcfloor"
)

// gcFloor is the least heap goal ledgerd runs with (internal/gcfloor): with
// the runtime's default a daemon streaming a backlog collects its few
// megabytes of live heap dozens of times a second. 0, none, when the
// operator set GOGC: that setting is kept.
func gcFloor(getenv func(string) string) uint64 {
	if getenv("GOGC") != "" {
		return 0
	}
	return gcfloor.DefaultFloor
}

// startGCFloor keeps the heap goal at floor or more until stop is called.
func startGCFloor(floor uint64, log zerolog.Logger) (stop func()) {
	if floor == 0 {
		return func() {}
	}
	log.Debug().Uint64("floor_bytes", floor).Msg("garbage collector heap floor")
	return gcfloor.Start(floor)
}
