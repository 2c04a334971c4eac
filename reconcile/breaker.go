package reconcile

import (
	"math"
	"time"
)

// breaker is the eviction circuit breaker of I5: at most limit automatic
// evictions within any BreakerWindow. It remembers when each eviction of the
// window happened (at most limit of them).
type breaker struct {
	times   []time.Time
	tripped bool
}

// limitFor is max(fraction x shapes, MinEvictionsPerMinute).
func limitFor(fraction float64, shapes int) int {
	return max(int(math.Floor(fraction*float64(shapes))), MinEvictionsPerMinute)
}

// room returns how many evictions the window allows at now.
func (b *breaker) room(now time.Time, limit int) int {
	i := 0
	for i < len(b.times) && !b.times[i].After(now.Add(-BreakerWindow)) {
		i++
	}
	b.times = b.times[i:]
	return max(limit-len(b.times), 0)
}

// spend records n evictions at now.
func (b *breaker) spend(now time.Time, n int) {
	for range n {
		b.times = append(b.times, now)
	}
}
