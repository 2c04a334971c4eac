package deliver_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// writeCounter is a sink that counts Serve's writes.
type writeCounter struct {
	*sink
	writes atomic.Int32
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes.Add(1)
	return w.sink.Write(p)
}

func (e *env) serveCounted(consumer string) (*writeCounter, func()) {
	w := &writeCounter{sink: newSink()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.hub.Serve(ctx, consumer, w)
	}()
	return w, func() { cancel(); <-done }
}

// TestBatchedStreamWritesOnceAtEndOfBatch: fed by a Runner's stream, the
// Hub wakes a consumer's writer when the stream has handed over what it
// read (EndBatch), not at each transaction, so a batch goes out in one
// write.
func TestBatchedStreamWritesOnceAtEndOfBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, deliver.Config{KeepaliveInterval: time.Hour})
		e.hub.NewRunner(stream.Config{})
		e.consumer("c")
		e.shape("s", "c", "public.t", nil)
		w, stop := e.serveCounted("c")
		defer stop()
		synctest.Wait()
		for l := ledger.LSN(0x100); l <= 0x500; l += 0x100 {
			e.handle(txn(l, insert("public.t", "id", "1")))
		}
		synctest.Wait()
		if n := w.writes.Load(); n != 0 {
			t.Fatalf("%d writes before the end of the batch, want none", n)
		}
		e.hub.EndBatch()
		synctest.Wait()
		if n := w.writes.Load(); n != 1 {
			t.Errorf("%d writes for one batch, want 1", n)
		}
		for _, want := range []string{"0/100", "0/200", "0/300", "0/400", "0/500"} {
			if f := w.next(t); f.LSN != want {
				t.Fatalf("got %s, want %s", f.LSN, want)
			}
		}
	})
}

// TestBatchedStreamFullOutboxIsWrittenAtOnce: a batch larger than the
// outbox does not wait for its end to be written: HandleTxn, waiting for
// room, wakes the writer itself, and a consumer that acks never meets the
// slow-consumer timeout.
func TestBatchedStreamFullOutboxIsWrittenAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, deliver.Config{OutboxBytes: 2500, SlowConsumerTimeout: 30 * time.Second, KeepaliveInterval: time.Hour})
		e.hub.NewRunner(stream.Config{})
		e.consumer("c")
		e.shape("s", "c", "public.t", nil)
		s, stop := e.serve("c")
		defer stop()
		got := e.autoAck(t, "c", "s", s)
		big := strings.Repeat("x", 700)
		start := time.Now()
		for l := ledger.LSN(0x100); l <= 0x800; l += 0x100 {
			e.handle(txn(l, insert("public.t", "v", big)))
		}
		e.hub.EndBatch()
		for l := ledger.LSN(0x100); l <= 0x800; l += 0x100 {
			if lsn := <-got; lsn != l.String() {
				t.Fatalf("got %s, want %s", lsn, l)
			}
		}
		if waited := time.Since(start); waited >= time.Second {
			t.Errorf("HandleTxn waited %v for room", waited)
		}
		if st := e.hub.Stats(); st.Overflows != 0 || st.Dropped != 0 {
			t.Errorf("stats %+v: nothing should overflow", st)
		}
	})
}
