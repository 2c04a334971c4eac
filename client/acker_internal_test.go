package client

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestAckerAcksTheRestOfARefusedBatch: after a daemon restart, an ack batch
// may mix a position the new daemon never delivered (it will send it again)
// with acks of transactions it did deliver. The daemon refuses the whole
// batch; the acker must still ack the others, or a shape with no later
// transaction stays pending and pins the slot.
func TestAckerAcksTheRestOfARefusedBatch(t *testing.T) {
	var mu sync.Mutex
	applied := map[string]string{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/consumers/c/ack", func(w http.ResponseWriter, r *http.Request) {
		var req wire.AckRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("decoding ack: %v", err)
		}
		if _, ok := req.Acks["before-restart"]; ok {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"` + wire.CodeAckBeyondDelivered + `","message":"not delivered yet"}`))
			return
		}
		mu.Lock()
		for s, l := range req.Acks {
			applied[s] = l
		}
		mu.Unlock()
		_, _ = w.Write([]byte(`{"flush_lsn":"0/100","gone":{}}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c, err := New(Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	a := &acker{k: &Consumer{c: c, id: "c", lease: "L"}, wake: make(chan struct{}, 1),
		pending: map[string]ledger.LSN{"before-restart": 0x500, "after-restart": 0x100},
		report:  func(error) {}, fatal: func(err error) { t.Errorf("fatal: %v", err) }}
	a.flush(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if applied["after-restart"] != "0/100" || len(applied) != 1 {
		t.Errorf("acks applied %v, want after-restart at 0/100 only", applied)
	}
	if len(a.pending) != 0 {
		t.Errorf("acks left pending %v, want none", a.pending)
	}
}

// TestResentAfterHandlingIsAckedNotHandled: the stream breaks while a
// transaction is being handled, and the new stream sends it again before
// its ack went out. The handler must not see it twice (the consumer would
// apply it twice within one run), and it must be acked again, since the
// first ack may be refused by a daemon that restarted meanwhile.
func TestResentAfterHandlingIsAckedNotHandled(t *testing.T) {
	a := &acker{wake: make(chan struct{}, 1), pending: map[string]ledger.LSN{}, handled: map[string]ledger.LSN{}}
	w := &work{wake: make(chan struct{}, 1), room: make(chan struct{}, 1), max: DefaultMaxQueueBytes}
	txn := func(lsn ledger.LSN) *Txn {
		return &Txn{LSN: lsn, Changes: []wire.Change{{Shapes: []string{"s"}, Op: "insert", Table: "public.t"}}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var seen []ledger.LSN
	done := make(chan error, 1)
	go func() {
		done <- w.handle(ctx, func(_ context.Context, t *Txn) error {
			seen = append(seen, t.LSN)
			if t.LSN == 0x300 {
				cancel()
			}
			return nil
		}, a)
	}()
	w.push(ctx, txn(0x100))
	w.push(ctx, txn(0x200))
	w.push(ctx, txn(0x100)) // the new stream resends what the old one sent
	w.push(ctx, txn(0x200))
	w.push(ctx, txn(0x300))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := []ledger.LSN{0x100, 0x200, 0x300}; !slices.Equal(seen, want) {
		t.Errorf("handled %v, want %v", seen, want)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending["s"] != 0x300 {
		t.Errorf("pending ack %s, want 0/300", a.pending["s"])
	}
}

// TestAckerPacesSteadyTrafficByDefault: under steady traffic each ack
// request costs the daemon a request and a ledger commit, whatever it
// carries, and a ledger commit its fsyncs. With the default interval, a
// transaction handled every millisecond for a second costs about ten ack
// requests (one per 100ms), and the last one is still acked.
func TestAckerPacesSteadyTrafficByDefault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const txns = 1000
		log, _, _ := ackSteadily(t, txns, time.Millisecond)
		if max := 12; len(log.at) > max {
			t.Errorf("%d ack requests for %d transactions over %v, want at most %d", len(log.at), txns, txns*time.Millisecond, max)
		}
		if want := ledger.LSN(txns).String(); log.last["s"] != want {
			t.Errorf("last ack of s %s, want %s", log.last["s"], want)
		}
	})
}

// TestAckerAcksAtTheEndOfABurst: a consumer that has caught up on a
// backlog acks it when the backlog ends, not up to an ack interval later
// (until then the slot keeps its WAL), while a backlog that goes on is
// still acked once an interval.
func TestAckerAcksAtTheEndOfABurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A backlog handled at 20,000 transactions a second for 1.03s.
		const txns = 20_600
		log, start, end := ackSteadily(t, txns, 50*time.Microsecond)
		if want := ledger.LSN(txns).String(); log.last["s"] != want {
			t.Fatalf("last ack of s %s, want %s", log.last["s"], want)
		}
		if got := log.at[len(log.at)-1].Sub(end); got > 2*quietAckGap {
			t.Errorf("the end of the burst was acked %v after its last transaction, want within %v", got, 2*quietAckGap)
		}
		if got, max := len(log.at), int(end.Sub(start)/DefaultAckInterval)+2; got > max {
			t.Errorf("%d ack requests over %v of backlog, want at most %d: one an interval and one at its end", got, end.Sub(start), max)
		}
	})
}

// ackSteadily runs a recordedAcker with the default interval (in a
// synctest bubble) and adds transactions 1..txns of shape s to it, one
// every gap; it returns the acker's log once a second has passed after
// the last one, and when the first and the last were added.
func ackSteadily(t *testing.T, txns int, gap time.Duration) (log *ackLog, start, end time.Time) {
	a, log := recordedAcker(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.loop(ctx); close(done) }()
	start = time.Now()
	for i := 1; i <= txns; i++ {
		a.add(ledger.LSN(i), []string{"s"})
		time.Sleep(gap)
	}
	end = time.Now().Add(-gap)
	time.Sleep(time.Second)
	cancel()
	<-done
	return log, start, end
}

// ackLog records the ack requests of recordedAcker: when each was sent,
// and the last LSN acked per shape.
type ackLog struct {
	mu   sync.Mutex
	at   []time.Time
	last map[string]string
}

// recordedAcker is an acker with the default interval whose requests are
// answered at once and recorded in the returned log.
func recordedAcker(t *testing.T) (*acker, *ackLog) {
	log := &ackLog{last: map[string]string{}}
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		var req wire.AckRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("decoding ack: %v", err)
		}
		log.mu.Lock()
		log.at = append(log.at, time.Now())
		maps.Copy(log.last, req.Acks)
		log.mu.Unlock()
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"flush_lsn":"0/100","gone":{}}`)), Request: r}, nil
	})}
	c, err := New(Config{URL: "http://ledgerd.invalid", HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	return &acker{k: &Consumer{c: c, id: "c", lease: "L"}, wake: make(chan struct{}, 1), burst: make(chan struct{}, 1),
		pending: map[string]ledger.LSN{}, handled: map[string]ledger.LSN{}, every: ackInterval(0),
		report: func(error) {}, fatal: func(err error) { t.Errorf("fatal: %v", err) }}, log
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestWholeFrameIsHandedOverWithOneAllocation: a transaction that came in
// one frame, the common case, has nothing to put together; handing it to
// the handler and acking it costs the list of its shapes, taken before the
// handler may change it, nothing more (the frame's own Txn, shapes and
// rows were allocated when it was read, and are the handler's).
func TestWholeFrameIsHandedOverWithOneAllocation(t *testing.T) {
	const txns = 600
	queued := make([]*Txn, txns)
	for i := range queued {
		queued[i] = &Txn{LSN: ledger.LSN(i + 1), EndLSN: ledger.LSN(i + 2), Part: 1, Last: true, size: 200,
			Changes: []wire.Change{{Shapes: []string{"s"}, Op: "insert", Table: "public.t"}}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &acker{wake: make(chan struct{}, 1), pending: map[string]ledger.LSN{}, handled: map[string]ledger.LSN{}}
	w := &work{wake: make(chan struct{}, 1), room: make(chan struct{}, 1), max: DefaultMaxQueueBytes, queue: make([]*Txn, 0, txns)}
	handled := make(chan ledger.LSN)
	done := make(chan error, 1)
	go func() {
		done <- w.handle(ctx, func(_ context.Context, txn *Txn) error {
			handled <- txn.LSN
			return nil
		}, a)
	}()
	next := 0
	hand := func() {
		w.push(ctx, queued[next])
		if got := <-handled; got != queued[next].LSN {
			t.Fatalf("handled %s, want %s", got, queued[next].LSN)
		}
		next++
	}
	hand() // the first one sets up the acker's maps
	allocs := testing.AllocsPerRun(txns-10, hand)
	t.Logf("%.1f allocations a transaction", allocs)
	if allocs > 1.5 {
		t.Errorf("%.1f allocations a transaction, want 1 (its shapes)", allocs)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if want := queued[next-1].LSN; a.pending["s"] != want {
		t.Errorf("pending ack of s %s, want %s", a.pending["s"], want)
	}
}

// TestHandlerOwnsTheChangesOfAWholeFrame: the handler may change the
// transaction it gets while the stream's reader looks at the shapes of the
// one being handled (a challenge); what it changes is its own: a challenge
// and the ack go by the shapes the frame reached.
func TestHandlerOwnsTheChangesOfAWholeFrame(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &acker{wake: make(chan struct{}, 1), pending: map[string]ledger.LSN{}, handled: map[string]ledger.LSN{}}
	w := &work{wake: make(chan struct{}, 1), room: make(chan struct{}, 1), max: DefaultMaxQueueBytes}
	in := &Txn{LSN: 0x10, EndLSN: 0x20, Part: 1, Last: true, Changes: []wire.Change{{Shapes: []string{"s"}, Op: "insert"}}}
	handled := make(chan ledger.LSN)
	go func() {
		_ = w.handle(ctx, func(_ context.Context, txn *Txn) error {
			if txn.LSN == in.LSN {
				txn.Changes[0].Shapes = []string{"mine"}
				if !w.busy("s") {
					t.Error("the transaction being handled is not busy on its shape")
				}
			}
			handled <- txn.LSN
			return nil
		}, a)
	}()
	w.push(ctx, in)
	<-handled
	// The next one is handled once the first was acked.
	w.push(ctx, &Txn{LSN: 0x30, EndLSN: 0x40, Part: 1, Last: true, Changes: []wire.Change{{Shapes: []string{"u"}, Op: "insert"}}})
	<-handled
	if !a.holds("s") || a.holds("mine") {
		t.Errorf("acks pending %v, want s's", a.pending)
	}
}

// TestHandlerOwnsTheChangesOfATxnInParts: the same for a transaction put
// together from parts: the handler gets its changes to keep or change
// (here in place), and the ack still goes to the shapes its parts reached.
func TestHandlerOwnsTheChangesOfATxnInParts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &acker{wake: make(chan struct{}, 1), pending: map[string]ledger.LSN{}, handled: map[string]ledger.LSN{}}
	w := &work{wake: make(chan struct{}, 1), room: make(chan struct{}, 1), max: DefaultMaxQueueBytes}
	handled := make(chan ledger.LSN)
	go func() {
		_ = w.handle(ctx, func(_ context.Context, txn *Txn) error {
			if txn.LSN == 0x10 {
				for i := range txn.Changes {
					txn.Changes[i].Shapes[0] = "mine"
				}
			}
			handled <- txn.LSN
			return nil
		}, a)
	}()
	w.push(ctx, &Txn{LSN: 0x10, Part: 1, Changes: []wire.Change{{Shapes: []string{"s"}, Op: "insert"}}})
	w.push(ctx, &Txn{LSN: 0x10, EndLSN: 0x20, Part: 2, Last: true, Changes: []wire.Change{{Shapes: []string{"s2"}, Op: "insert"}}})
	<-handled
	w.push(ctx, &Txn{LSN: 0x30, EndLSN: 0x40, Part: 1, Last: true, Changes: []wire.Change{{Shapes: []string{"u"}, Op: "insert"}}})
	<-handled
	if !a.holds("s") || !a.holds("s2") || a.holds("mine") {
		t.Errorf("acks pending %v, want s's and s2's", a.pending)
	}
}
