package deliver_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
)

// deadlineSink is a sink that records the write deadlines Serve sets, and
// when.
type deadlineSink struct {
	*sink
	mu   sync.Mutex
	sets [][2]time.Time // {when set, deadline}
}

func (s *deadlineSink) SetWriteDeadline(d time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets = append(s.sets, [2]time.Time{time.Now(), d})
	return nil
}

func (s *deadlineSink) deadlines() [][2]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][2]time.Time(nil), s.sets...)
}

// TestWriteDeadlineNotReArmedPerFrame: under live traffic a change stream
// writes a frame every few milliseconds; the write deadline
// (SlowConsumerTimeout) is moved once a tenth of it has passed, not for
// every frame, and every write still has at least nine tenths of it.
// Fake time (synctest).
func TestWriteDeadlineNotReArmedPerFrame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 10 * time.Second
		e := newEnv(t, deliver.Config{SlowConsumerTimeout: timeout, KeepaliveInterval: time.Hour})
		e.consumer("c")
		e.shape("s", "c", "public.t", nil)
		s := &deadlineSink{sink: newSink()}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.hub.Serve(ctx, "c", s) }()
		defer func() {
			cancel()
			<-done
		}()
		// 3 seconds of a frame every 4ms: 750 writes.
		var lsn ledger.LSN = 0x100
		for range 750 {
			e.handle(txn(lsn, insert("public.t", "v", "x")))
			s.next(t)
			lsn += 0x100
			time.Sleep(4 * time.Millisecond)
		}
		sets := s.deadlines()
		if len(sets) < 2 || len(sets) > 4 {
			t.Fatalf("write deadline set %d times for 750 frames over 3s, want about one a second", len(sets))
		}
		for i, d := range sets {
			if i > 0 && d[0].Sub(sets[i-1][0]) < timeout/10 {
				t.Errorf("deadline moved %v after the previous one, want at least %v", d[0].Sub(sets[i-1][0]), timeout/10)
			}
			var next time.Time
			if i+1 < len(sets) {
				next = sets[i+1][0]
			} else {
				next = time.Now()
			}
			// Writes until the next move have at least 9/10 of the timeout.
			if left := d[1].Sub(next); left < timeout*9/10 {
				t.Errorf("a write at %v had %v left of its deadline, want at least %v", next, left, timeout*9/10)
			}
		}
	})
}
