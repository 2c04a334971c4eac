package deliver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// pieces cuts a transaction of rows ids from..to (inclusive) on public.t
// into stream pieces of per rows each, numbered as the decoder numbers them.
func pieces(lsn ledger.LSN, from, to, per int) []*stream.Txn {
	var out []*stream.Txn
	for i := from; i <= to; i += per {
		p := &stream.Txn{Xid: uint32(lsn), CommitLSN: lsn, CommitTime: commitTime, Part: len(out) + 1, More: true}
		for j := i; j < i+per && j <= to; j++ {
			p.Changes = append(p.Changes, insert("public.t", "id", fmt.Sprint(j), "tenant", []string{"a", "b"}[j%2]))
		}
		out = append(out, p)
	}
	last := out[len(out)-1]
	last.More, last.EndLSN = false, lsn+8
	return out
}

// readTxn reads one transaction's frames from s, checking the part rules,
// and returns its row ids and part count.
func readTxn(t *testing.T, s *sink, lsn string, from int) ([]string, int) {
	t.Helper()
	var ids []string
	for n := from; ; n++ {
		f := s.next(t)
		if f.Type != wire.FrameTxn || f.LSN != lsn {
			t.Fatalf("frame %s %s part %d last %v, want a part of %s", f.Type, f.LSN, f.Part, f.Last, lsn)
		}
		whole := f.Part == 0 && n == 1
		if !whole && f.Part != n {
			t.Fatalf("part %d of %s, want part %d", f.Part, lsn, n)
		}
		if (f.EndLSN != "") != (f.Last || whole) {
			t.Errorf("part %d: end_lsn %q with last %v", f.Part, f.EndLSN, f.Last)
		}
		for _, ch := range f.Changes {
			ids = append(ids, *ch.New["id"])
		}
		if f.Last || whole {
			return ids, n
		}
	}
}

func idRange(from, to, step int) string {
	var out []string
	for i := from; i <= to; i += step {
		out = append(out, fmt.Sprint(i))
	}
	return strings.Join(out, ",")
}

// TestTransactionInParts: a transaction handed over in pieces reaches an
// unfiltered and a filtered shape of two consumers as parts of about
// FragmentBytes, whole and in order; its shapes are pending from the first
// piece (the safe flush LSN does not pass it, I1) and an ack of it is
// refused until its last part is written.
func TestTransactionInParts(t *testing.T) {
	e := newEnv(t, deliver.Config{FragmentBytes: 1024})
	e.consumer("c1")
	e.consumer("c2")
	e.shape("all", "c1", "public.t", nil)
	e.shape("only_a", "c2", "public.t", map[string][]string{"tenant": {"a"}})
	e.handle(txn(0x100, insert("public.other", "id", "0")))
	s1, stop1 := e.serve("c1")
	defer stop1()
	s2, stop2 := e.serve("c2")
	defer stop2()

	ps := pieces(0x200, 1, 200, 50)
	e.handle(ps[0])
	if safe := e.l.SafeLSN(); safe > 0x200 {
		t.Errorf("safe flush LSN %s passed the transaction being routed 0/200", safe)
	}
	f := s1.next(t)
	if f.Part != 1 || f.Last {
		t.Errorf("first frame %+v, want part 1 of more", f)
	}
	var ids []string
	for _, ch := range f.Changes {
		ids = append(ids, *ch.New["id"])
	}
	if _, err := e.hub.Ack(context.Background(), "c1", map[string]ledger.LSN{"all": 0x200}); !errors.As(err, new(*deliver.BeyondError)) {
		t.Errorf("ack before the last part: %v, want a BeyondError", err)
	}
	e.handle(ps[1:]...)
	rest, parts := readTxn(t, s1, "0/200", 2)
	if got := strings.Join(append(ids, rest...), ","); got != idRange(1, 200, 1) {
		t.Errorf("unfiltered shape got %s, want 1..200 in order", got)
	}
	if parts < 5 {
		t.Errorf("c1 got the transaction in %d parts, want many of 1 KiB", parts)
	}
	ids2, _ := readTxn(t, s2, "0/200", 1)
	if got := strings.Join(ids2, ","); got != idRange(2, 200, 2) {
		t.Errorf("filtered shape got %s, want the even ids in order", got)
	}
	e.ack("c1", map[string]ledger.LSN{"all": 0x200})
	e.ack("c2", map[string]ledger.LSN{"only_a": 0x200})
	if safe := e.l.SafeLSN(); safe != 0x208 {
		t.Errorf("safe flush LSN %s after the acks, want the end 0/208", safe)
	}
	if st, _ := e.hub.Consumer("c1"); st.OutboxTxns != 0 || st.OutboxBytes != 0 {
		t.Errorf("c1 outbox holds %d entries, %d bytes after the ack", st.OutboxTxns, st.OutboxBytes)
	}

	// Reconnected: c1 gets nothing again; a small transaction is one frame.
	stop1()
	s1, stop1 = e.serve("c1")
	e.handle(txn(0x300, insert("public.t", "id", "300", "tenant", "a")))
	if line := <-s1.raw; strings.Contains(line, `"part"`) || strings.Contains(line, `"last"`) {
		t.Errorf("one-part transaction written as %s, want the plain frame", line)
	}
	if f := <-s1.frames; f.LSN != "0/300" {
		t.Errorf("after the reconnect got %s, want only the new 0/300", f.LSN)
	}
}

// TestTransactionResentWholeAfterReplicationCut: the replication stream is
// cut after some parts of a transaction were written, and hands the
// transaction again from its first piece. The consumer's stream is closed
// (it holds a transaction in part), and the next stream gets the
// transaction whole from part 1, once.
func TestTransactionResentWholeAfterReplicationCut(t *testing.T) {
	e := newEnv(t, deliver.Config{FragmentBytes: 1024})
	e.consumer("c1")
	e.shape("all", "c1", "public.t", nil)
	s, stop := e.serve("c1")
	ps := pieces(0x200, 1, 200, 50)
	e.handle(ps[:2]...)
	s.next(t)
	s.next(t)
	e.handle(ps[0]) // the stream was cut: the transaction again
	if st, _ := e.hub.Consumer("c1"); st.Streaming {
		t.Error("the change stream holding parts of the transaction is still open")
	}
	if err := stop(); err != nil && !errors.Is(err, deliver.ErrRestarted) {
		t.Errorf("stream ended with %v, want ErrRestarted", err)
	}
	s, stop = e.serve("c1")
	defer stop()
	e.handle(ps[1:]...)
	ids, _ := readTxn(t, s, "0/200", 1)
	if got := strings.Join(ids, ","); got != idRange(1, 200, 1) {
		t.Errorf("after the cut got %s, want 1..200 once, in order", got)
	}
	e.ack("c1", map[string]ledger.LSN{"all": 0x200})
	s.none(t)
}

// TestShapeCreatedInsideTransactionGetsNoneOfIt: a shape created while a
// transaction is routed in pieces missed its first pieces; it starts at
// that transaction and gets none of it, never a transaction in part.
func TestShapeCreatedInsideTransactionGetsNoneOfIt(t *testing.T) {
	e := newEnv(t, deliver.Config{FragmentBytes: 1024})
	e.consumer("c1")
	e.consumer("c2")
	e.shape("old", "c1", "public.t", nil)
	s1, stop1 := e.serve("c1")
	defer stop1()
	s2, stop2 := e.serve("c2")
	defer stop2()
	ps := pieces(0x200, 1, 100, 50)
	e.handle(ps[0])
	sh, _, err := e.hub.CreateShape(ledger.ShapeSpec{ID: "new", Consumer: "c2", Table: "public.t"})
	if err != nil {
		t.Fatal(err)
	}
	if sh.StartLSN != 0x200 {
		t.Errorf("shape created inside 0/200 starts at %s, want 0/200", sh.StartLSN)
	}
	e.handle(ps[1])
	e.handle(txn(0x300, insert("public.t", "id", "300")))
	ids, _ := readTxn(t, s1, "0/200", 1)
	if got := strings.Join(ids, ","); got != idRange(1, 100, 1) {
		t.Errorf("old shape got %s, want 1..100", got)
	}
	if f := s2.next(t); f.LSN != "0/300" {
		t.Errorf("new shape got %s first, want 0/300 (none of 0/200)", f.LSN)
	}
}

// TestLargeTransactionReplayedToReader: a transaction larger than the
// outbox is read whole, not acked, and the stream is cut: the next stream
// gets it again from the slot (a replay) while reading it. Its parts are
// spilled as they are written although the transaction was delivered
// before, so the replay never waits on the outbox for an ack that cannot
// come before the last part.
func TestLargeTransactionReplayedToReader(t *testing.T) {
	e := newEnv(t, deliver.Config{FragmentBytes: 1024, OutboxBytes: 4096})
	e.consumer("c1")
	e.shape("all", "c1", "public.t", nil)
	ps := pieces(0x200, 1, 400, 50)
	for pass := range 2 {
		s, stop := e.serve("c1")
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.handle(ps...)
		}()
		ids, _ := readTxn(t, s, "0/200", 1)
		if got := strings.Join(ids, ","); got != idRange(1, 400, 1) {
			t.Fatalf("pass %d: got %s, want 1..400 in order", pass, got)
		}
		<-done
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLastPartFailureAbandonsPartialOutboxes: HandleTxn fails on a
// transaction's last piece (ctx ends while one consumer's outbox is full)
// after another consumer got its last part. The stream hands the
// transaction again: the consumer that had it whole keeps it and gets it
// once; the one that held some parts gets it again whole, from part 1,
// never a part twice.
func TestLastPartFailureAbandonsPartialOutboxes(t *testing.T) {
	e := newEnv(t, deliver.Config{FragmentBytes: 1024, OutboxBytes: 8192, SlowConsumerTimeout: time.Hour})
	e.consumer("c1")
	e.consumer("c2")
	e.shape("a", "c1", "public.t", map[string][]string{"tenant": {"a"}})
	e.shape("b", "c2", "public.t", map[string][]string{"tenant": {"b"}})
	s1, stop1 := e.serve("c1")
	defer stop1()
	row := func(id int, tenant string) stream.Change {
		return insert("public.t", "id", fmt.Sprint(id), "tenant", tenant)
	}
	for i := range 3 { // c2 does not read: its outbox fills
		e.handle(txn(ledger.LSN(0x100+i), row(900+i, "b")))
	}
	mk := func() []*stream.Txn {
		p1 := &stream.Txn{Xid: 7, CommitLSN: 0x200, CommitTime: commitTime, Part: 1, More: true}
		p2 := &stream.Txn{Xid: 7, CommitLSN: 0x200, CommitTime: commitTime, Part: 2, EndLSN: 0x208}
		for i := 1; i <= 12; i++ {
			p1.Changes = append(p1.Changes, row(i, "a"), row(100+i, "b"))
		}
		for i := 13; i <= 30; i++ {
			p2.Changes = append(p2.Changes, row(i, "a"), row(100+i, "b"))
		}
		return []*stream.Txn{p1, p2}
	}
	ps := mk()
	e.handle(ps[0])
	ctx, cancel := context.WithCancel(context.Background())
	failed := make(chan error, 1)
	go func() { failed <- e.hub.HandleTxn(ctx, ps[1]) }()
	ids, _ := readTxn(t, s1, "0/200", 1) // c1 gets its last part; c2's waits for room
	cancel()
	if err := <-failed; !errors.Is(err, context.Canceled) {
		t.Fatalf("HandleTxn of the last piece: %v, want context.Canceled", err)
	}
	if got := strings.Join(ids, ","); got != idRange(1, 30, 1) {
		t.Errorf("c1 got %s, want 1..30", got)
	}

	// The stream hands the transaction again; then c2 reads.
	again := mk()
	e.handle(again[0])
	s2, stop2 := e.serve("c2")
	defer stop2()
	e.handle(again[1])
	for i := range 3 {
		if f := s2.next(t); f.LSN != fmt.Sprintf("0/%X", 0x100+i) {
			t.Fatalf("c2 got %s, want 0/%X", f.LSN, 0x100+i)
		}
	}
	ids, _ = readTxn(t, s2, "0/200", 1)
	if got := strings.Join(ids, ","); got != idRange(101, 130, 1) {
		t.Errorf("c2 got %s, want 101..130 once", got)
	}
	e.handle(txn(0x300, row(300, "a")))
	if f := s1.next(t); f.LSN != "0/300" {
		t.Errorf("c1 got %s after the transaction, want only the new 0/300", f.LSN)
	}
}
