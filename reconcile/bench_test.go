package reconcile_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/reconcile"
)

// BenchmarkPass measures one reconcile pass over a healthy deployment
// (nothing to evict: the steady-state cost paid every interval) of 1000
// consumers with 10 shapes each, half of them pending. The figure that
// matters is the time per shape, which bounds how many shapes a 1 s
// interval can reconcile.
func BenchmarkPass(b *testing.B) {
	const consumers, perConsumer = 1000, 10
	e := newEnv(b, nil)
	start := time.Now()
	var pending []string
	for i := range consumers {
		id := fmt.Sprintf("c%04d", i)
		c := e.register(id, time.Hour)
		var inv []string
		for j := range perConsumer {
			sid := fmt.Sprintf("%s-s%02d", id, j)
			e.shapes(id, sid)
			inv = append(inv, sid)
			if j%2 == 0 {
				pending = append(pending, sid)
			}
		}
		e.clk.Advance(time.Millisecond)
		e.heartbeat(c, inv)
		e.heartbeat(c, inv)
	}
	e.track(pending...)
	b.Logf("setup of %d shapes: %v", consumers*perConsumer, time.Since(start))
	e.slot.set(func(s *reconcile.SlotState) { s.WALEnd = e.lsn + 1<<20; s.ConfirmedFlush = e.lsn })
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if err := e.r.Pass(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if n := len(e.l.Shapes()); n != consumers*perConsumer {
		b.Fatalf("%d shapes left: a healthy deployment lost some", n)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(consumers*perConsumer), "ns/shape")
	b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/pass")
}
