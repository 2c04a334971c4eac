package deliver

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// order records, in order, what the test saw happen.
type order struct {
	mu     sync.Mutex
	events []string
}

func (o *order) add(ev string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, ev)
}

func (o *order) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string{}, o.events...)
}

// frameWriter is a change stream that records each write holding a
// transaction and signals it.
type frameWriter struct {
	o     *order
	lsn   string
	wrote chan struct{}
}

func (w *frameWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"lsn":"`+w.lsn+`"`)) {
		w.o.add("wrote " + w.lsn)
		w.wrote <- struct{}{}
	}
	return len(p), nil
}

func (w *frameWriter) Flush() error { return nil }

// TestResendIsNotWrittenAfterItsAck: a consumer reconnects; the new stream
// takes its resend of 0/100 from the outbox, and before it writes it, the
// consumer's ack of 0/100 (handled from the previous stream) is applied and
// answered. Once an ack is answered the transaction must never be written to
// the consumer again (I2): the write of the resend must come before the ack
// is answered, or not at all.
func TestResendIsNotWrittenAfterItsAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, err := ledger.Open(ledger.Config{Path: t.TempDir() + "/ledger.db",
			Identity: ledger.Identity{SystemID: "7000000000000000001", Timeline: 1, Database: "app", Slot: "ledgerd"}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = l.Close() }()
		h := New(Config{Ledger: l, KeepaliveInterval: time.Hour})
		defer h.Close()
		if _, err := l.Register(ledger.ConsumerSpec{ID: "c1", TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		sh, _, err := h.CreateShape(ledger.ShapeSpec{ID: "s", Consumer: "c1", Table: "public.t"})
		if err != nil {
			t.Fatal(err)
		}
		commit := sh.StartLSN + 0x100
		txn := &stream.Txn{Xid: 1, CommitLSN: commit, EndLSN: commit + 8,
			Changes: []stream.Change{{Op: stream.OpInsert, Table: "public.t", New: []stream.Column{{Name: "id", Value: "1"}}}}}
		if err := h.HandleTxn(context.Background(), txn); err != nil {
			t.Fatal(err)
		}

		// The first stream delivers the transaction, then breaks.
		var seen order
		first := &frameWriter{o: &seen, lsn: commit.String(), wrote: make(chan struct{}, 1)}
		ctx1, cancel1 := context.WithCancel(context.Background())
		done1 := make(chan error, 1)
		go func() { done1 <- h.Serve(ctx1, "c1", first) }()
		<-first.wrote
		cancel1()
		<-done1

		// The consumer reconnects while its ack of the transaction is on
		// the way: the ack is handled between the new stream taking its
		// resend and writing it.
		var seen2 order
		second := &frameWriter{o: &seen2, lsn: commit.String(), wrote: make(chan struct{}, 1)}
		acked := make(chan error, 1)
		beforeWrite = func() {
			beforeWrite = nil
			go func() {
				_, err := h.Ack(context.Background(), "c1", map[string]ledger.LSN{"s": commit})
				seen2.add("ack answered")
				acked <- err
			}()
			// Time enough (in the bubble's clock) for the ack's group
			// commit: the ack is answered, unless it waits for this write.
			time.Sleep(time.Minute)
		}
		defer func() { beforeWrite = nil }()
		ctx2, cancel2 := context.WithCancel(context.Background())
		defer cancel2()
		go func() { _ = h.Serve(ctx2, "c1", second) }()
		if err := <-acked; err != nil {
			t.Fatalf("ack: %v", err)
		}
		<-second.wrote
		if got := seen2.list(); got[0] != "wrote "+commit.String() {
			t.Errorf("events %v: the transaction was written to the consumer after its ack was answered", got)
		}
	})
}

// blockingWriter is a consumer that stops reading once a write holds lsn:
// that write waits until release is closed.
type blockingWriter struct {
	lsn     string
	blocked chan struct{}
	release chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"lsn":"`+w.lsn+`"`)) {
		close(w.blocked)
		<-w.release
	}
	return len(p), nil
}

func (w *blockingWriter) Flush() error { return nil }

// TestAckDoesNotWaitForWritesBehindIt: a consumer reconnects, reads the
// resent 0/100 and, before reading further, acks it and waits for the
// answer, while the stream's write of the new 0/200 is stuck on it. The ack
// waits for no write but that of its own transaction, or the two would wait
// for each other until the slow-consumer timeout.
func TestAckDoesNotWaitForWritesBehindIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, err := ledger.Open(ledger.Config{Path: t.TempDir() + "/ledger.db",
			Identity: ledger.Identity{SystemID: "7000000000000000001", Timeline: 1, Database: "app", Slot: "ledgerd"}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = l.Close() }()
		h := New(Config{Ledger: l, KeepaliveInterval: time.Hour})
		defer h.Close()
		if _, err := l.Register(ledger.ConsumerSpec{ID: "c1", TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		sh, _, err := h.CreateShape(ledger.ShapeSpec{ID: "s", Consumer: "c1", Table: "public.t"})
		if err != nil {
			t.Fatal(err)
		}
		handle := func(commit ledger.LSN) {
			t.Helper()
			txn := &stream.Txn{Xid: uint32(commit), CommitLSN: commit, EndLSN: commit + 8,
				Changes: []stream.Change{{Op: stream.OpInsert, Table: "public.t", New: []stream.Column{{Name: "id", Value: "1"}}}}}
			if err := h.HandleTxn(context.Background(), txn); err != nil {
				t.Fatal(err)
			}
		}
		first, second := sh.StartLSN+0x100, sh.StartLSN+0x200
		handle(first)
		var seen order
		w1 := &frameWriter{o: &seen, lsn: first.String(), wrote: make(chan struct{}, 1)}
		ctx1, cancel1 := context.WithCancel(context.Background())
		done1 := make(chan error, 1)
		go func() { done1 <- h.Serve(ctx1, "c1", w1) }()
		<-w1.wrote
		cancel1()
		<-done1

		handle(second)
		w2 := &blockingWriter{lsn: second.String(), blocked: make(chan struct{}), release: make(chan struct{})}
		ctx2, cancel2 := context.WithCancel(context.Background())
		defer cancel2()
		served := make(chan error, 1)
		go func() { served <- h.Serve(ctx2, "c1", w2) }()
		<-w2.blocked
		if _, err := h.Ack(context.Background(), "c1", map[string]ledger.LSN{"s": first}); err != nil {
			t.Fatalf("ack: %v", err)
		}
		close(w2.release)
		cancel2()
		<-served
	})
}
