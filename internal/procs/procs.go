// Package procs sizes the Go scheduler to the daemon's load.
//
// Under live traffic ledgerd is woken about a thousand times a second and
// does a few microseconds of work each time. With more than one P, every
// goroutine it readies on the way (the change stream's writer, an ack's
// commit) makes the runtime wake another thread to look for it, and that
// thread finds nothing and sleeps again: on a small machine those wake-ups
// cost more CPU than the work (BenchmarkLiveTraffic: a quarter of ledgerd's
// CPU time). With one P the goroutine runs on the thread already awake.
// When the daemon is busy (catching up on a backlog, a large reconcile
// pass) it needs every core it may have.
//
// Run therefore keeps GOMAXPROCS at 1 while the process uses little CPU,
// and gives it back to the runtime's default as soon as one interval uses
// more than Config.High cores. An operator who sets GOMAXPROCS in the
// environment keeps that setting: the caller does not run the governor.
package procs

import (
	"context"
	"runtime"
	"time"

	"github.com/rs/zerolog"
)

// Defaults applied to zero Config fields.
const (
	DefaultInterval = time.Second
	DefaultHigh     = 0.5
	DefaultLow      = 0.25
	DefaultQuiet    = 5
)

// Config configures Run. Zero values mean the documented default.
type Config struct {
	// Interval is how often the process's CPU use is measured. Default 1s.
	Interval time.Duration
	// High is the CPU use, in cores, over one interval above which the
	// runtime's default GOMAXPROCS is restored. Default 0.5: with one P the
	// process cannot go much past 1.
	High float64
	// Low is the CPU use, in cores, under which the process runs on one P
	// once Quiet intervals in a row stayed below it. Default 0.25.
	Low float64
	// Quiet is that number of intervals. Default 5.
	Quiet int
	// CPU returns the CPU time (user and system) the process has used so
	// far. Default: getrusage where the platform has it; without one Run
	// returns at once.
	CPU func() (time.Duration, bool)
	// Set applies a choice: one P, or the runtime's default. Default
	// runtime.GOMAXPROCS(1) and runtime.SetDefaultGOMAXPROCS.
	Set func(one bool)
	// Logger receives a debug line at each change.
	Logger zerolog.Logger
}

// Run measures the process's CPU use every Interval and sets GOMAXPROCS
// to 1 or back to the runtime's default, until ctx ends. It starts at the
// default (start-up and the first pass are busy) and restores it when it
// returns.
func Run(ctx context.Context, cfg Config) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.High <= 0 {
		cfg.High = DefaultHigh
	}
	if cfg.Low <= 0 {
		cfg.Low = DefaultLow
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = DefaultQuiet
	}
	if cfg.CPU == nil {
		cfg.CPU = processCPU
	}
	if cfg.Set == nil {
		cfg.Set = func(one bool) {
			if one {
				runtime.GOMAXPROCS(1)
			} else {
				runtime.SetDefaultGOMAXPROCS()
			}
		}
	}
	prevCPU, ok := cfg.CPU()
	if !ok {
		return
	}
	one, quiet := false, 0
	defer func() {
		if one {
			cfg.Set(false)
		}
	}()
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	prev := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		cpu, ok := cfg.CPU()
		if !ok || !now.After(prev) {
			continue
		}
		use := float64(cpu-prevCPU) / float64(now.Sub(prev))
		prevCPU, prev = cpu, now
		switch {
		case use > cfg.High:
			quiet = 0
			if one {
				one = false
				cfg.Set(false)
				cfg.Logger.Debug().Float64("cpu_cores", use).Msg("busy: GOMAXPROCS back to the default")
			}
		case use < cfg.Low:
			quiet++
			if !one && quiet >= cfg.Quiet {
				one = true
				cfg.Set(true)
				cfg.Logger.Debug().Float64("cpu_cores", use).Msg("quiet: GOMAXPROCS 1")
			}
		default:
			quiet = 0
		}
	}
}
