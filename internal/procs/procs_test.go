package procs_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ledgerd/ledgerd/internal/procs"
)

// load plays a process whose CPU use, in cores, the test sets per
// interval, and records what Run sets.
type load struct {
	mu    sync.Mutex
	cores float64
	cpu   time.Duration
	last  time.Time
	sets  []bool
}

func (l *load) CPU() (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.last.IsZero() {
		l.cpu += time.Duration(l.cores * float64(now.Sub(l.last)))
	}
	l.last = now
	return l.cpu, true
}

func (l *load) Set(one bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sets = append(l.sets, one)
}

func (l *load) run(cores float64, intervals int) {
	l.mu.Lock()
	l.cores = cores
	l.mu.Unlock()
	time.Sleep(time.Duration(intervals) * procs.DefaultInterval)
	synctest.Wait()
}

func (l *load) got() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sets)
}

// TestOneProcWhileQuiet: the process runs on one P after Quiet intervals
// of little CPU use, and on the default again from the first busy
// interval; use between Low and High changes nothing. Fake time
// (synctest) and a played CPU clock.
func TestOneProcWhileQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &load{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			procs.Run(ctx, procs.Config{CPU: l.CPU, Set: l.Set})
		}()
		// Start at the default; a short quiet spell changes nothing.
		l.run(0.1, procs.DefaultQuiet-1)
		if s := l.got(); len(s) != 0 {
			t.Fatalf("after %d quiet intervals: set %v, want nothing", procs.DefaultQuiet-1, s)
		}
		// Middling use breaks the run of quiet intervals.
		l.run(0.4, 1)
		l.run(0.1, procs.DefaultQuiet-1)
		if s := l.got(); len(s) != 0 {
			t.Fatalf("quiet run broken by middling use: set %v, want nothing", s)
		}
		l.run(0.1, 1)
		if s := l.got(); !slices.Equal(s, []bool{true}) {
			t.Fatalf("after %d quiet intervals: set %v, want one P", procs.DefaultQuiet, s)
		}
		// One busy interval restores the default at once.
		l.run(0.9, 1)
		if s := l.got(); !slices.Equal(s, []bool{true, false}) {
			t.Fatalf("after a busy interval: set %v, want the default back", s)
		}
		// Quiet again, then stop: the default is restored on the way out.
		l.run(0.1, procs.DefaultQuiet)
		cancel()
		<-done
		if s := l.got(); !slices.Equal(s, []bool{true, false, true, false}) {
			t.Fatalf("quiet again and stopped: set %v, want one P, then the default", s)
		}
	})
}
