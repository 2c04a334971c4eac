package reconcile

import (
	"math"
	"time"
)

// breaker is the eviction circuit breaker of I5: at most limit automatic
// evictions within any BreakerWindow. It remembers how many evictions each
// pass of the window made.
type breaker struct {
	spent   []spend
	total   int // sum of spent[i].n
	tripped bool
}

type spend struct {
	at time.Time
	n  int
}

// limitFor is max(fraction x shapes, MinEvictionsPerMinute).
func limitFor(fraction float64, shapes int) int {
	return max(int(math.Floor(fraction*float64(shapes))), MinEvictionsPerMinute)
}

// room returns how many evictions the window allows at now.
func (b *breaker) room(now time.Time, limit int) int {
	i := 0
	for i < len(b.spent) && !b.spent[i].at.After(now.Add(-BreakerWindow)) {
		b.total -= b.spent[i].n
		i++
	}
	b.spent = b.spent[i:]
	return max(limit-b.total, 0)
}

// use records n evictions at now.
func (b *breaker) use(now time.Time, n int) {
	if k := len(b.spent); k > 0 && b.spent[k-1].at.Equal(now) {
		b.spent[k-1].n += n
	} else {
		b.spent = append(b.spent, spend{at: now, n: n})
	}
	b.total += n
}
