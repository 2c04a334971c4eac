package main

import (
	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/internal/gcfloor"
)

// startGCFloor keeps the heap goal at gcfloor.DefaultFloor or more
// (internal/gcfloor): with the runtime's default a daemon streaming a
// backlog collects its few megabytes of live heap dozens of times a
// second. An operator who sets GOGC keeps that setting.
func startGCFloor(getenv func(string) string, log zerolog.Logger) (stop func()) {
	if getenv("GOGC") != "" {
		return func() {}
	}
	log.Debug().Uint64("floor_bytes", gcfloor.DefaultFloor).Msg("garbage collector heap floor")
	return gcfloor.Start(gcfloor.DefaultFloor)
}
