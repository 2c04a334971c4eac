package clocktest

import (
	"sync"
	"time"
)

// Clock is a clock that stands still until Advance or Set moves it. It has
// a wall reading (Now) and a monotonic one (Monotonic), which move together
// under Advance; Set steps the wall clock alone, as NTP or an operator does.
// It satisfies ledger.Clock, ledger.MonotonicClock and reconcile's clock.
// Safe for concurrent use.
type Clock struct {
	mu   sync.Mutex
	t    time.Time
	mono time.Duration
}

// New returns a clock standing at t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's current wall time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Monotonic returns the time elapsed since New: moved by Advance, never by
// Set.
func (c *Clock) Monotonic() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

// Advance lets d pass: both readings move forward by d. It returns the new
// wall time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.mono += d
	return c.t
}

// Set steps the wall clock to t, forwards or backwards; no time passes on
// the monotonic clock.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
