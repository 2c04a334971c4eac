package deliver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// env is a Hub over a real ledger in a temporary directory.
type env struct {
	t   *testing.T
	l   *ledger.Ledger
	hub *deliver.Hub
}

func newEnv(t *testing.T, cfg deliver.Config) *env {
	t.Helper()
	l, err := ledger.Open(ledger.Config{Path: t.TempDir() + "/ledger.db",
		Identity: ledger.Identity{SystemID: "7000000000000000001", Timeline: 1, Database: "app", Slot: "ledgerd"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the ledger: %v", err)
		}
	})
	cfg.Ledger = l
	h := deliver.New(cfg)
	t.Cleanup(h.Close)
	return &env{t: t, l: l, hub: h}
}

// consumer registers id and returns it with its lease token.
func (e *env) consumer(id string) ledger.Consumer {
	e.t.Helper()
	c, err := e.l.Register(ledger.ConsumerSpec{ID: id, TTL: time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) shape(id, consumer, table string, filter map[string][]string) {
	e.t.Helper()
	sh, _, err := e.l.PutShape(ledger.ShapeSpec{ID: id, Consumer: consumer, Table: table, Filter: filter})
	if err != nil {
		e.t.Fatal(err)
	}
	e.hub.PutShape(sh)
}

func (e *env) handle(txns ...*stream.Txn) {
	e.t.Helper()
	for _, txn := range txns {
		if err := e.hub.HandleTxn(context.Background(), txn); err != nil {
			e.t.Fatalf("HandleTxn %s: %v", txn.CommitLSN, err)
		}
	}
}

func (e *env) ack(consumer string, acks map[string]ledger.LSN) deliver.AckResult {
	e.t.Helper()
	res, err := e.hub.Ack(context.Background(), consumer, acks)
	if err != nil {
		e.t.Fatalf("ack %v: %v", acks, err)
	}
	return res
}

var commitTime = time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)

// txn makes a transaction at commit LSN lsn with the given changes.
func txn(lsn ledger.LSN, changes ...stream.Change) *stream.Txn {
	return &stream.Txn{Xid: uint32(lsn), CommitLSN: lsn, EndLSN: lsn + 8, CommitTime: commitTime, Changes: changes}
}

func insert(table string, kv ...string) stream.Change {
	ch := stream.Change{Op: stream.OpInsert, Table: table}
	for i := 0; i+1 < len(kv); i += 2 {
		ch.New = append(ch.New, stream.Column{Name: kv[i], Value: kv[i+1]})
	}
	return ch
}

// sink is a change stream reader: Serve writes into it, tests read frames.
type sink struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	frames chan wire.Frame
	raw    chan string
}

func newSink() *sink {
	return &sink{frames: make(chan wire.Frame, 10000), raw: make(chan string, 10000)}
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	for {
		line, err := s.buf.ReadString('\n')
		if err != nil {
			s.buf.Reset()
			s.buf.WriteString(line)
			return len(p), nil
		}
		var f wire.Frame
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			panic("frame is not valid JSON: " + err.Error() + ": " + line)
		}
		if f.Type == wire.FrameKeepalive {
			continue
		}
		s.raw <- line
		s.frames <- f
	}
}

func (s *sink) Flush() error { return nil }

// next returns the next non-keepalive frame.
func (s *sink) next(t *testing.T) wire.Frame {
	t.Helper()
	select {
	case f := <-s.frames:
		<-s.raw
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame arrived")
		return wire.Frame{}
	}
}

// none checks that no frame is waiting; call it after the stream has
// written everything it had (a later frame proves that).
func (s *sink) none(t *testing.T) {
	t.Helper()
	select {
	case f := <-s.frames:
		t.Fatalf("unexpected frame %+v", f)
	default:
	}
}

// serve runs a change stream for consumer until the returned stop is
// called; stop returns Serve's error.
func (e *env) serve(consumer string) (*sink, func() error) {
	s := newSink()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.hub.Serve(ctx, consumer, s) }()
	var once sync.Once
	var err error
	return s, func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
}

func lsnOf(t *testing.T, s string) ledger.LSN {
	t.Helper()
	l, err := ledger.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestDeliversToMatchingShapesOnly(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	e.consumer("c2")
	e.shape("tenant-a", "c1", "public.orders", map[string][]string{"tenant": {"a"}})
	e.shape("orders", "c2", "public.orders", nil)
	e.shape("items", "c2", "public.items", nil)
	s1, stop1 := e.serve("c1")
	defer stop1()
	s2, stop2 := e.serve("c2")
	defer stop2()

	e.handle(
		txn(0x100, insert("public.orders", "id", "1", "tenant", "a")),
		txn(0x200, insert("public.orders", "id", "2", "tenant", "b")),
		txn(0x300, insert("public.audit", "id", "3")),
		txn(0x400, insert("public.items", "id", "4"), insert("public.orders", "id", "5", "tenant", "a")),
	)
	f := s1.next(t)
	if f.Type != wire.FrameTxn || f.LSN != "0/100" || f.EndLSN != "0/108" || f.Xid != 0x100 || !f.CommitTime.Equal(commitTime) {
		t.Errorf("c1 first frame %+v", f)
	}
	if len(f.Changes) != 1 || !slices.Equal(f.Changes[0].Shapes, []string{"tenant-a"}) || *f.Changes[0].New["id"] != "1" {
		t.Errorf("c1 first frame changes %+v", f.Changes)
	}
	f = s1.next(t)
	if f.LSN != "0/400" || len(f.Changes) != 1 || f.Changes[0].Table != "public.orders" || *f.Changes[0].New["id"] != "5" {
		t.Errorf("c1 second frame %+v: want only the orders change of 0/400", f)
	}
	s1.none(t)
	for _, want := range []string{"0/100", "0/200", "0/400"} {
		if f := s2.next(t); f.LSN != want {
			t.Fatalf("c2 got %s, want %s", f.LSN, want)
		}
	}
	if len(f.Changes) != 1 {
		t.Errorf("c1 0/400 carries %d changes", len(f.Changes))
	}
	s2.none(t)
	if st := e.hub.Stats(); st.Deliveries != 5 {
		t.Errorf("deliveries %d, want 5", st.Deliveries)
	}
}

// TestKeyOnlyDeleteOverDelivered: a delete whose old tuple holds only the
// key (replica identity DEFAULT) reaches a shape filtered on another column
// (I1), its frame's "old" carries the key and leaves the unknown columns out
// (never null), and Stats counts it as a possible over-delivery; a delete
// with the whole old row is filtered and not counted.
func TestKeyOnlyDeleteOverDelivered(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	e.shape("tenant-b", "c1", "public.orders", map[string][]string{"tenant": {"b"}})
	e.shape("orders", "c1", "public.orders", nil)
	s, stop := e.serve("c1")
	defer stop()
	e.handle(
		txn(0x100, stream.Change{Op: stream.OpDelete, Table: "public.orders",
			Old: []stream.Column{{Name: "id", Value: "2"}}, OldKind: stream.TupleKey}),
		txn(0x200, stream.Change{Op: stream.OpDelete, Table: "public.orders",
			Old: []stream.Column{{Name: "id", Value: "3"}, {Name: "tenant", Value: "a"}}, OldKind: stream.TupleFull}),
	)
	f := s.next(t)
	if f.LSN != "0/100" || len(f.Changes) != 1 {
		t.Fatalf("first frame %+v", f)
	}
	ch := f.Changes[0]
	if !slices.Equal(ch.Shapes, []string{"orders", "tenant-b"}) {
		t.Errorf("key-only delete reaches %v, want both shapes", ch.Shapes)
	}
	if len(ch.Old) != 1 || ch.Old["id"] == nil || *ch.Old["id"] != "2" {
		t.Errorf("old %v, want only the key id=2", ch.Old)
	}
	if _, ok := ch.Old["tenant"]; ok {
		t.Errorf("old carries tenant %v; a key-only tuple leaves it out", ch.Old["tenant"])
	}
	f = s.next(t)
	if f.LSN != "0/200" || len(f.Changes) != 1 || !slices.Equal(f.Changes[0].Shapes, []string{"orders"}) {
		t.Errorf("full delete of tenant a: %+v, want only the unfiltered shape", f)
	}
	if st := e.hub.Stats(); st.Overdelivered != 1 {
		t.Errorf("over-delivered %d, want 1 (the key-only delete to tenant-b)", st.Overdelivered)
	}
}

func TestUntrackedTxnAccountedAtOnce(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	e.shape("s", "c1", "public.orders", map[string][]string{"tenant": {"a"}})
	e.handle(
		txn(0x100, insert("public.audit", "id", "1")),
		txn(0x200, insert("public.orders", "tenant", "b")), // table tracked, filter does not match
	)
	if n := e.l.PendingCount(); n != 0 {
		t.Errorf("%d shapes pending after untracked transactions", n)
	}
	if got := e.l.SafeLSN(); got != 0x208 {
		t.Errorf("safe LSN %s, want 0/208 (end of the last transaction)", got)
	}
	if st, _ := e.hub.Consumer("c1"); st.OutboxTxns != 0 {
		t.Errorf("outbox holds %d transactions", st.OutboxTxns)
	}
}

func TestAckDrainsOutboxAndMovesFlush(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	e.shape("s", "c1", "public.t", nil)
	s, stop := e.serve("c1")
	defer stop()
	e.handle(txn(0x100, insert("public.t", "id", "1")), txn(0x200, insert("public.t", "id", "2")))
	s.next(t)
	s.next(t)
	if got := e.l.SafeLSN(); got != 0x100 {
		t.Fatalf("safe LSN %s before acks, want 0/100", got)
	}
	res := e.ack("c1", map[string]ledger.LSN{"s": 0x100})
	if got := e.l.SafeLSN(); got != 0x200 {
		t.Errorf("safe LSN %s after the first ack, want 0/200", got)
	}
	if res.FlushLSN > 0x200 {
		t.Errorf("flush %s passed an unacked transaction", res.FlushLSN)
	}
	e.ack("c1", map[string]ledger.LSN{"s": 0x200})
	if got := e.l.SafeLSN(); got != 0x208 {
		t.Errorf("safe LSN %s after all acks, want 0/208", got)
	}
	st, _ := e.hub.Consumer("c1")
	if st.OutboxTxns != 0 || st.OutboxBytes != 0 {
		t.Errorf("outbox after acks: %+v", st)
	}
	// A lower ack is accepted and ignored (I6).
	e.ack("c1", map[string]ledger.LSN{"s": 0x100})
	if sh, _ := e.l.Shape("s"); sh.FlushedLSN != 0x200 {
		t.Errorf("flushed %s after a lower ack", sh.FlushedLSN)
	}
}

func TestAckValidation(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	e.consumer("c2")
	e.shape("s", "c1", "public.t", nil)
	e.shape("other", "c2", "public.t", nil)
	e.handle(txn(0x100, insert("public.t", "id", "1")))

	// Not written to any stream yet: nothing may be acked.
	_, err := e.hub.Ack(context.Background(), "c1", map[string]ledger.LSN{"s": 0x100})
	var be *deliver.BeyondError
	if !errors.As(err, &be) || be.Shape != "s" {
		t.Fatalf("ack before delivery: %v, want *BeyondError", err)
	}
	s, stop := e.serve("c1")
	defer stop()
	s.next(t)
	if _, err := e.hub.Ack(context.Background(), "c1", map[string]ledger.LSN{"s": 0x101}); !errors.Is(err, deliver.ErrBeyondDelivered) {
		t.Errorf("ack past the delivered txn: %v", err)
	}
	if _, err := e.hub.Ack(context.Background(), "c1", map[string]ledger.LSN{"s": 0x100, "other": 0x100}); !errors.Is(err, deliver.ErrNotOwner) {
		t.Errorf("ack of another consumer's shape: %v", err)
	}
	if sh, _ := e.l.Shape("s"); sh.FlushedLSN != 0 {
		t.Errorf("a refused ack changed the shape: flushed %s", sh.FlushedLSN)
	}
	if _, err := e.l.Evict("s", ledger.ReasonManual, "test", "operator"); err != nil {
		t.Fatal(err)
	}
	res := e.ack("c1", map[string]ledger.LSN{"s": 0x100})
	if res.Gone["s"] != ledger.ReasonManual {
		t.Errorf("ack of an evicted shape: gone %v", res.Gone)
	}
}

func TestReconnectResendsUnackedOnly(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	e.shape("x", "c1", "public.t", nil)
	e.shape("y", "c1", "public.t", map[string][]string{"k": {"1"}})
	s, stop := e.serve("c1")
	e.handle(
		txn(0x100, insert("public.t", "k", "1")),
		txn(0x200, insert("public.t", "k", "1")),
		txn(0x300, insert("public.t", "k", "2")),
	)
	for range 3 {
		s.next(t)
	}
	e.ack("c1", map[string]ledger.LSN{"x": 0x100, "y": 0x100}) // 0/100 fully acked
	e.ack("c1", map[string]ledger.LSN{"x": 0x200})             // 0/200 acked by x only
	if err := stop(); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}

	s, stop = e.serve("c1")
	defer stop()
	f := s.next(t)
	if f.LSN != "0/200" || len(f.Changes) != 1 || !slices.Equal(f.Changes[0].Shapes, []string{"y"}) {
		t.Errorf("first resent frame %+v: want 0/200 for shape y only", f)
	}
	if f := s.next(t); f.LSN != "0/300" || !slices.Equal(f.Changes[0].Shapes, []string{"x"}) {
		t.Errorf("second resent frame %+v: want 0/300 for x", f)
	}
	// New transactions follow the resent ones, in commit order.
	e.handle(txn(0x400, insert("public.t", "k", "1")))
	if f := s.next(t); f.LSN != "0/400" || !slices.Equal(f.Changes[0].Shapes, []string{"x", "y"}) {
		t.Errorf("frame after the resend %+v", f)
	}
	s.none(t)
}

func TestStreamReplayDoesNotDuplicate(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	e.shape("s", "c1", "public.t", nil)
	s, stop := e.serve("c1")
	defer stop()
	t1, t2 := txn(0x100, insert("public.t", "id", "1")), txn(0x200, insert("public.t", "id", "2"))
	e.handle(t1, t2)
	s.next(t)
	s.next(t)
	e.ack("c1", map[string]ledger.LSN{"s": 0x100})
	// The stream reconnects and Postgres replays from an older position.
	e.handle(t1, t2, txn(0x300, insert("public.t", "id", "3")))
	if f := s.next(t); f.LSN != "0/300" {
		t.Errorf("after a replay the stream sent %s, want only the new 0/300", f.LSN)
	}
	s.none(t)
	if st, _ := e.hub.Consumer("c1"); st.OutboxTxns != 2 {
		t.Errorf("outbox holds %d transactions, want 2 (0/200 and 0/300)", st.OutboxTxns)
	}
}

func TestNewStreamReplacesOld(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- e.hub.Serve(ctx, "c1", newSink()) }()
	// Wait until the first stream is registered.
	for {
		if st, ok := e.hub.Consumer("c1"); ok && st.Streaming {
			break
		}
		time.Sleep(time.Millisecond)
	}
	_, stop := e.serve("c1")
	defer stop()
	if err := <-first; !errors.Is(err, deliver.ErrReplaced) {
		t.Errorf("first stream ended with %v, want ErrReplaced", err)
	}
}

func TestRemoveShapeAndSync(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	c1 := e.consumer("c1")
	e.shape("a", "c1", "public.t", nil)
	e.shape("b", "c1", "public.u", nil)
	e.handle(txn(0x100, insert("public.t", "id", "1")), txn(0x200, insert("public.u", "id", "1")))
	// The reconciler evicts "a" behind the hub's back; Sync catches up.
	if _, err := e.l.Evict("a", ledger.ReasonStalled, "no ack", "reconcile"); err != nil {
		t.Fatal(err)
	}
	e.hub.Sync()
	if _, ok := e.hub.Router().Shape("a"); ok {
		t.Error("router still routes to the evicted shape")
	}
	s := newSink()
	ended := make(chan error, 1)
	go func() { ended <- e.hub.Serve(context.Background(), "c1", s) }()
	f := s.next(t)
	if f.Type != wire.FrameEvicted || f.Shape != "a" || f.Reason != string(ledger.ReasonStalled) {
		t.Errorf("first frame %+v, want evicted a (stalled)", f)
	}
	if f := s.next(t); f.LSN != "0/200" {
		t.Errorf("frame %+v, want only 0/200 left (0/100 belonged to the evicted shape)", f)
	}
	e.hub.Challenge("c1", "b")
	if f := s.next(t); f.Type != wire.FrameChallenge || f.Shape != "b" {
		t.Errorf("frame %+v, want a challenge for b", f)
	}
	// A consumer that is gone loses its stream.
	if err := e.l.Release("c1", c1.Lease); err != nil {
		t.Fatal(err)
	}
	e.hub.Sync()
	if err := <-ended; !errors.Is(err, deliver.ErrConsumerGone) {
		t.Errorf("stream of a released consumer ended with %v", err)
	}
	if e.hub.Stats().OutboxBytes != 0 {
		t.Errorf("outbox bytes %d after the consumer left", e.hub.Stats().OutboxBytes)
	}
}

func TestAckAll(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	e.shape("a", "c1", "public.t", nil)
	e.shape("b", "c1", "public.u", nil)
	s, stop := e.serve("c1")
	defer stop()
	e.handle(txn(0x100, insert("public.t", "id", "1")), txn(0x200, insert("public.u", "id", "1")), txn(0x300, insert("public.t", "id", "2")))
	for range 3 {
		s.next(t)
	}
	if _, err := e.hub.AckAll(context.Background(), "c1", 0x400); !errors.Is(err, deliver.ErrBeyondDelivered) {
		t.Errorf("AckAll past delivery: %v", err)
	}
	if _, err := e.hub.AckAll(context.Background(), "c1", 0x200); err != nil {
		t.Fatal(err)
	}
	a, _ := e.l.Shape("a")
	b, _ := e.l.Shape("b")
	if a.FlushedLSN != 0x200 || b.FlushedLSN != 0x200 {
		t.Errorf("after AckAll 0/200: a flushed %s, b flushed %s, want both 0/200", a.FlushedLSN, b.FlushedLSN)
	}
	if got := e.l.SafeLSN(); got != 0x300 {
		t.Errorf("safe %s, want 0/300", got)
	}
}

// TestFrameEncoding checks the hand-written encoder against encoding/json on
// values that need escaping.
func TestFrameEncoding(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	e.shape("s\"q", "c1", "public.t", nil)
	s, stop := e.serve("c1")
	defer stop()
	weird := []string{"", "plain", "quote\" back\\slash", "nl\nnul\x00tab\t\x1f", "bad utf8 \xff\xfe", "é ü 日本 \u2028\u2029", "<>&"}
	var cols []stream.Column
	for i, v := range weird {
		cols = append(cols, stream.Column{Name: "c" + string(rune('a'+i)), Value: v})
	}
	cols = append(cols, stream.Column{Name: "n", Kind: stream.KindNull}, stream.Column{Name: "toast", Kind: stream.KindUnchanged})
	e.handle(&stream.Txn{Xid: 7, CommitLSN: 0x1_0000_0100, EndLSN: 0x1_0000_0200, CommitTime: commitTime,
		Changes: []stream.Change{
			{Op: stream.OpUpdate, Table: "public.t", New: cols, Old: []stream.Column{{Name: "id", Value: "1"}}},
			{Op: stream.OpTruncate, Table: "public.t"},
		}})
	f := s.next(t)
	if f.LSN != "1/100" || f.EndLSN != "1/200" || f.Xid != 7 {
		t.Errorf("frame header %+v", f)
	}
	ch := f.Changes[0]
	if ch.Op != "update" || !slices.Equal(ch.Shapes, []string{"s\"q"}) || *ch.Old["id"] != "1" {
		t.Errorf("change %+v", ch)
	}
	for i, v := range weird {
		var want string
		b, _ := json.Marshal(v) // encoding/json is the reference
		_ = json.Unmarshal(b, &want)
		if got := ch.New["c"+string(rune('a'+i))]; got == nil || *got != want {
			t.Errorf("column %d: got %v, want %q", i, got, want)
		}
	}
	if v, ok := ch.New["n"]; !ok || v != nil {
		t.Errorf("NULL column: %v %v", v, ok)
	}
	if _, ok := ch.New["toast"]; ok {
		t.Error("an unchanged TOAST column was sent")
	}
	if tr := f.Changes[1]; tr.Op != "truncate" || tr.New != nil || tr.Old != nil {
		t.Errorf("truncate change %+v", tr)
	}
}

// TestBackpressurePausesThenOverflows runs with a fake clock: a consumer
// that does not ack blocks HandleTxn until the slow-consumer timeout, then
// loses its stream; what it missed is replayed from the slot once it acks.
func TestBackpressurePausesThenOverflows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, deliver.Config{OutboxBytes: 2500, SlowConsumerTimeout: 30 * time.Second, KeepaliveInterval: time.Hour})
		e.consumer("slow")
		e.consumer("fast")
		e.shape("s", "slow", "public.t", nil)
		e.shape("f", "fast", "public.t", nil)
		big := strings.Repeat("x", 700)
		mk := func(l ledger.LSN) *stream.Txn { return txn(l, insert("public.t", "v", big)) }
		_, stop := e.serve("slow")
		defer stop()
		fs, fstop := e.serve("fast")
		defer fstop()
		fastGot := e.autoAck(t, "fast", "f", fs)
		e.handle(mk(0x100), mk(0x200))
		synctest.Wait()
		if st, _ := e.hub.Consumer("slow"); st.OutboxTxns != 2 {
			t.Fatalf("outbox holds %d, want 2", st.OutboxTxns)
		}

		// The third transaction does not fit: HandleTxn waits.
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- e.hub.HandleTxn(context.Background(), mk(0x300)) }()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("HandleTxn returned while the outbox was full")
		default:
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited != 30*time.Second {
			t.Errorf("HandleTxn waited %v, want the slow-consumer timeout", waited)
		}
		if err := stop(); !errors.Is(err, deliver.ErrSlowConsumer) {
			t.Errorf("slow stream ended with %v, want ErrSlowConsumer", err)
		}
		// Overflowed: later transactions are dropped without waiting.
		e.handle(mk(0x400))
		st := e.hub.Stats()
		if st.Overflows != 1 || st.Dropped != 2 || st.SlowCloses != 1 {
			t.Errorf("stats %+v: want 1 overflow, 2 dropped, 1 slow close", st)
		}
		if e.l.SafeLSN() > 0x100 {
			t.Errorf("safe LSN %s passed transactions the slow consumer never got", e.l.SafeLSN())
		}
		// The fast consumer got everything.
		for _, want := range []string{"0/100", "0/200", "0/300", "0/400"} {
			if got := <-fastGot; got != want {
				t.Fatalf("fast consumer got %s, want %s", got, want)
			}
		}

		// The slow consumer reconnects, gets its outbox and acks it.
		s, stop := e.serve("slow")
		defer stop()
		s.next(t)
		s.next(t)
		e.ack("slow", map[string]ledger.LSN{"s": 0x200})
		select {
		case <-e.hub.Replay():
		default:
			t.Fatal("no replay asked after the overflowed consumer caught up")
		}
		// The stream restarts from the slot: everything from 0/100 again.
		e.handle(mk(0x100), mk(0x200), mk(0x300), mk(0x400))
		for _, want := range []string{"0/300", "0/400"} {
			if f := s.next(t); f.LSN != want {
				t.Fatalf("after the replay the slow consumer got %s, want %s", f.LSN, want)
			}
		}
		e.ack("slow", map[string]ledger.LSN{"s": 0x400})
		e.handle(mk(0x500))
		if f := s.next(t); f.LSN != "0/500" {
			t.Fatalf("slow consumer got %s, want 0/500", f.LSN)
		}
		if st := e.hub.Stats(); st.Overflows != 1 || st.Replays != 1 {
			t.Errorf("stats %+v: want 1 overflow, 1 replay", st)
		}
		if got := e.l.SafeLSN(); got != 0x500 {
			t.Errorf("safe LSN %s, want 0/500", got)
		}
		synctest.Wait()
		s.none(t)
		if got := <-fastGot; got != "0/500" {
			t.Errorf("fast consumer got %s after the replay, want only 0/500", got)
		}
	})
}

// TestBackpressureReleasedByAck: an ack that frees room lets HandleTxn go on
// at once, without losing anything.
func TestBackpressureReleasedByAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, deliver.Config{OutboxBytes: 2500, SlowConsumerTimeout: 30 * time.Second, KeepaliveInterval: time.Hour})
		e.consumer("c")
		e.shape("s", "c", "public.t", nil)
		big := strings.Repeat("x", 700)
		mk := func(l ledger.LSN) *stream.Txn { return txn(l, insert("public.t", "v", big)) }
		s, stop := e.serve("c")
		defer stop()
		e.handle(mk(0x100), mk(0x200))
		s.next(t)
		s.next(t)
		done := make(chan error, 1)
		go func() { done <- e.hub.HandleTxn(context.Background(), mk(0x300)) }()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		e.ack("c", map[string]ledger.LSN{"s": 0x100})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if f := s.next(t); f.LSN != "0/300" {
			t.Errorf("got %s, want 0/300", f.LSN)
		}
		if st := e.hub.Stats(); st.Overflows != 0 || st.Dropped != 0 {
			t.Errorf("stats %+v: nothing should overflow", st)
		}
	})
}

var _ io.Writer = (*sink)(nil)

// autoAck acks every txn frame the sink receives and passes its LSN on.
func (e *env) autoAck(t *testing.T, consumer, shape string, s *sink) <-chan string {
	out := make(chan string, 100)
	quit := make(chan struct{})
	t.Cleanup(func() { close(quit) })
	go func() {
		for {
			var f wire.Frame
			select {
			case f = <-s.frames:
			case <-quit:
				return
			}
			<-s.raw
			if _, err := e.hub.Ack(context.Background(), consumer, map[string]ledger.LSN{shape: lsnOf(t, f.LSN)}); err != nil {
				t.Errorf("auto-ack %s: %v", f.LSN, err)
			}
			out <- f.LSN
		}
	}()
	return out
}

// TestShapeCreatedWhileStreaming: a shape created while transactions flow
// gets every transaction committed after its StartLSN, none missed (I1).
func TestShapeCreatedWhileStreaming(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c")
	s, stop := e.serve("c")
	defer stop()
	created := make(chan struct{})
	last := make(chan ledger.LSN, 1)
	go func() {
		// Feed until 200 transactions after the shape exists.
		after := -1
		for i := 1; ; i++ {
			l := ledger.LSN(i * 0x100)
			if err := e.hub.HandleTxn(context.Background(), txn(l, insert("public.t", "id", "x"))); err != nil {
				t.Error(err)
				last <- l
				return
			}
			if after < 0 {
				select {
				case <-created:
					after = 0
				default:
				}
			} else if after++; after == 200 {
				last <- l
				return
			}
		}
	}()
	// Create the shape while the flow runs.
	for e.l.Position() < 0x10000 {
		time.Sleep(10 * time.Microsecond)
	}
	sh, ok, err := e.hub.CreateShape(ledger.ShapeSpec{ID: "late", Consumer: "c", Table: "public.t"})
	if err != nil || !ok {
		t.Fatal(err, ok)
	}
	close(created)
	end := <-last
	var want []string
	for l := ledger.LSN(0x100); l <= end; l += 0x100 {
		if l > sh.StartLSN {
			want = append(want, l.String())
		}
	}
	if len(want) < 200 {
		t.Fatalf("shape created at %s, flow ended at %s: want at least 200 transactions after it", sh.StartLSN, end)
	}
	for _, w := range want {
		if f := s.next(t); f.LSN != w {
			t.Fatalf("the shape got %s where %s was due: a transaction was missed", f.LSN, w)
		}
	}
}

// TestOverflowDuringReplayWaitsForTheNextPass: an outbox that overflows in
// the middle of a replay from the slot keeps dropping until the next pass,
// which brings the dropped transaction back; the rest of the current pass
// must not slip a later transaction past it, or an ack of that later one
// would flush the dropped one unseen (I1).
func TestOverflowDuringReplayWaitsForTheNextPass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, deliver.Config{OutboxBytes: 2500, SlowConsumerTimeout: 30 * time.Second, KeepaliveInterval: time.Hour})
		e.consumer("slow")
		e.shape("s", "slow", "public.t", nil)
		big := strings.Repeat("x", 700)
		mk := func(l ledger.LSN) *stream.Txn { return txn(l, insert("public.t", "v", big)) }
		replayAsked := func() {
			t.Helper()
			select {
			case <-e.hub.Replay():
			default:
				t.Fatal("no replay asked after the overflowed consumer caught up")
			}
		}

		// First pass: two fit, 0/300 overflows the outbox, 0/300..0/600 are dropped.
		e.handle(mk(0x100), mk(0x200), mk(0x300), mk(0x400), mk(0x500), mk(0x600))
		s, stop := e.serve("slow")
		defer stop()
		for _, want := range []string{"0/100", "0/200"} {
			if f := s.next(t); f.LSN != want {
				t.Fatalf("got %s, want %s", f.LSN, want)
			}
		}
		e.ack("slow", map[string]ledger.LSN{"s": 0x200})
		replayAsked()

		// Second pass, from the confirmed position 0/300: 0/500 overflows again.
		e.handle(mk(0x300), mk(0x400), mk(0x500))
		if err := stop(); !errors.Is(err, deliver.ErrSlowConsumer) {
			t.Fatalf("stream ended with %v, want ErrSlowConsumer", err)
		}
		s, stop = e.serve("slow")
		defer stop()
		for _, want := range []string{"0/300", "0/400"} {
			if f := s.next(t); f.LSN != want {
				t.Fatalf("got %s, want %s", f.LSN, want)
			}
		}
		e.ack("slow", map[string]ledger.LSN{"s": 0x400})
		replayAsked()
		// The second pass goes on until the stream restarts: 0/600 must not
		// overtake the dropped 0/500.
		e.handle(mk(0x600))
		// Third pass, from the confirmed position 0/500.
		e.handle(mk(0x500), mk(0x600))
		for _, want := range []string{"0/500", "0/600"} {
			if f := s.next(t); f.LSN != want {
				t.Fatalf("got %s, want %s (a dropped transaction was skipped)", f.LSN, want)
			}
		}
		e.ack("slow", map[string]ledger.LSN{"s": 0x600})
		synctest.Wait()
		s.none(t)
	})
}

// TestRemoveShapeAfterConcurrentRecreate: a DELETE evicts a shape, a
// concurrent PUT creates the id again before the DELETE's RemoveShape runs;
// that late RemoveShape must not stop routing to the new shape, or its
// transactions would be flushed past without being tracked (I1).
func TestRemoveShapeAfterConcurrentRecreate(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	e.consumer("c2")
	e.shape("x", "c1", "public.t", nil)
	if err := e.l.DeleteShape("x"); err != nil {
		t.Fatal(err)
	}
	sh, created, err := e.hub.CreateShape(ledger.ShapeSpec{ID: "x", Consumer: "c2", Table: "public.u"})
	if err != nil || !created {
		t.Fatalf("creating x again: created %v, %v", created, err)
	}
	e.hub.RemoveShape("x", "")
	e.handle(txn(sh.StartLSN+0x100, insert("public.u", "id", "1")))
	got, ok := e.l.Shape("x")
	if !ok || got.PendingLSN != sh.StartLSN+0x100 {
		t.Fatalf("new shape x: %+v (live %v), want its transaction pending", got, ok)
	}
	s, stop := e.serve("c2")
	defer stop()
	if f := s.next(t); f.LSN != (sh.StartLSN + 0x100).String() {
		t.Errorf("c2 got %s, want %s", f.LSN, sh.StartLSN+0x100)
	}
}

// TestAckAtStreamPositionCoversShapesLastTxn: a consumer written up to
// 0/200 acks each of its shapes at 0/200, though one shape's last
// transaction is 0/100. The ack is within what was delivered and covers
// that shape's last transaction: both shapes complete, and nothing is half
// applied.
func TestAckAtStreamPositionCoversShapesLastTxn(t *testing.T) {
	e := newEnv(t, deliver.Config{})
	e.consumer("c1")
	e.shape("a", "c1", "public.u", nil)
	e.shape("b", "c1", "public.t", nil)
	e.handle(txn(0x100, insert("public.t", "id", "1")), txn(0x200, insert("public.u", "id", "2")))
	s, stop := e.serve("c1")
	defer stop()
	s.next(t)
	s.next(t)
	res := e.ack("c1", map[string]ledger.LSN{"a": 0x200, "b": 0x200})
	for id, want := range map[string]ledger.LSN{"a": 0x200, "b": 0x100} {
		if sh, _ := e.l.Shape(id); sh.FlushedLSN != want || sh.PendingLSN != 0 {
			t.Errorf("shape %s: flushed %s pending %s, want flushed %s, nothing pending", id, sh.FlushedLSN, sh.PendingLSN, want)
		}
	}
	if res.FlushLSN != 0x208 {
		t.Errorf("flush %s, want 0/208", res.FlushLSN)
	}
	if st, _ := e.hub.Consumer("c1"); st.OutboxTxns != 0 {
		t.Errorf("outbox holds %d transactions, want none", st.OutboxTxns)
	}
}

// TestHoldTxns: a transaction handed over while the Hub is held (as at
// start, while the router is filled) waits for the release and is then
// routed with the shapes put meanwhile (I1): the shape is pending on it.
// Another one after the release is not held; a held one gives up when its
// context ends.
func TestHoldTxns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, deliver.Config{})
		e.consumer("c")
		release := e.hub.HoldTxns()
		handled := make(chan error, 1)
		go func() { handled <- e.hub.HandleTxn(context.Background(), txn(0x1000, insert("public.t", "id", "1"))) }()
		synctest.Wait() // HandleTxn is waiting, or done if nothing held it
		e.shape("s", "c", "public.t", nil)
		release()
		if err := <-handled; err != nil {
			t.Fatal(err)
		}
		if sh, ok := e.l.Shape("s"); !ok || sh.PendingLSN != 0x1000 {
			t.Fatalf("shape s: live %v, pending %s; want it pending on the held transaction", ok, sh.PendingLSN)
		}
		release()
		e.handle(txn(0x2000, insert("public.t", "id", "2")))

		e.hub.HoldTxns()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := e.hub.HandleTxn(ctx, txn(0x3000, insert("public.t", "id", "3"))); !errors.Is(err, context.Canceled) {
			t.Fatalf("held HandleTxn with its context ended: %v, want context.Canceled", err)
		}
	})
}
