package client_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/internal/clocktest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/reconcile"
	"github.com/ledgerd/ledgerd/stream"
)

const (
	stallGrace       = time.Minute
	challengeTimeout = 10 * time.Second
)

// daemon is a ledger, hub, API and reconciler in this process, on a clock
// the test moves: the reconciler passes only when the test says so.
type daemon struct {
	t        *testing.T
	clk      *clocktest.Clock
	l        *ledger.Ledger
	hub      *deliver.Hub
	rec      *reconcile.Reconciler
	c        *client.Client
	answered chan string // shapes whose challenge was answered with a defer
}

func newDaemon(t *testing.T, opts ...func(*deliver.Config)) *daemon {
	t.Helper()
	d := &daemon{t: t, clk: clocktest.New(time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)), answered: make(chan string, 64)}
	l, err := ledger.Open(ledger.Config{Path: t.TempDir() + "/ledger.db",
		Identity: ledger.Identity{SystemID: "7000000000000000001", Timeline: 1, Database: "app", Slot: "ledgerd"}, Clock: d.clk})
	if err != nil {
		t.Fatal(err)
	}
	d.l = l
	hcfg := deliver.Config{Ledger: l, KeepaliveInterval: time.Hour}
	for _, o := range opts {
		o(&hcfg)
	}
	d.hub = deliver.New(hcfg)
	d.rec, err = reconcile.New(reconcile.Config{Ledger: l, Challenger: d.hub, Syncer: d.hub, Clock: d.clk,
		StallGrace: stallGrace, ChallengeTimeout: challengeTimeout})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(api.Config{Ledger: l, Hub: d.hub, Clock: d.clk,
		Defer: func(consumer string, shapes []string) error {
			err := d.rec.Defer(consumer, shapes)
			for _, s := range shapes {
				d.answered <- s
			}
			return err
		}}).Handler())
	t.Cleanup(func() {
		d.hub.Close()
		srv.Close()
		if err := l.Close(); err != nil {
			t.Errorf("closing the ledger: %v", err)
		}
	})
	if d.c, err = client.New(client.Config{URL: srv.URL}); err != nil {
		t.Fatal(err)
	}
	return d
}

// consumer registers id with one shape on public.t and returns it with the
// shape's start position.
func (d *daemon) consumer(id, shape string) (*client.Consumer, ledger.LSN) {
	d.t.Helper()
	ctx := context.Background()
	k, err := d.c.Register(ctx, client.ConsumerConfig{ID: id, TTL: time.Hour})
	if err != nil {
		d.t.Fatal(err)
	}
	res, err := k.PutShape(ctx, shape, "public.t", nil)
	if err != nil {
		d.t.Fatal(err)
	}
	start, err := ledger.ParseLSN(res.StartLSN)
	if err != nil {
		d.t.Fatal(err)
	}
	return k, start
}

func (d *daemon) feed(lsn ledger.LSN) {
	d.t.Helper()
	txn := &stream.Txn{Xid: uint32(lsn), CommitLSN: lsn, EndLSN: lsn + 8, CommitTime: d.clk.Now(),
		Changes: []stream.Change{{Op: stream.OpInsert, Table: "public.t", New: []stream.Column{{Name: "id", Value: "1"}}}}}
	if err := d.hub.HandleTxn(context.Background(), txn); err != nil {
		d.t.Fatal(err)
	}
}

// pass runs one reconcile pass at the clock's time after moving it by dt.
func (d *daemon) pass(dt time.Duration) {
	d.t.Helper()
	d.clk.Advance(dt)
	if err := d.rec.Pass(context.Background()); err != nil {
		d.t.Fatal(err)
	}
}

// TestSlowHandlerIsNotStalled: the handler takes longer than stall grace
// plus challenge timeout, several times over. The consumer is alive and
// working: every challenge is answered while the handler runs, and the
// shape is not evicted as stalled. When the handler returns, the
// transaction is acked.
func TestSlowHandlerIsNotStalled(t *testing.T) {
	d := newDaemon(t)
	k, start := d.consumer("slow", "s")
	started := make(chan *client.Txn, 1)
	release := make(chan struct{})
	acked := make(chan map[string]ledger.LSN, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() {
		ran <- k.Run(ctx, func(ctx context.Context, txn *client.Txn) error {
			started <- txn
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, client.RunOptions{OnAck: func(acks map[string]ledger.LSN, _ ledger.LSN) { acked <- acks }})
	}()
	commit := start + 0x100
	d.feed(commit)
	select {
	case txn := <-started:
		if txn.LSN != commit {
			t.Fatalf("handler got %s, want %s", txn.LSN, commit)
		}
	case err := <-ran:
		t.Fatalf("Run ended before the handler was called: %v", err)
	}

	for round := range 3 {
		d.pass(stallGrace) // pending without progress for the grace: challenged
		select {
		case s := <-d.answered:
			if s != "s" {
				t.Fatalf("round %d: defer for %s, want s", round, s)
			}
		case <-time.After(10 * time.Second): // a guard against a hang, not a measure
			t.Fatalf("round %d: the challenge was not answered while the handler ran", round)
		}
		d.pass(challengeTimeout) // the challenge's time is up
		if ts, ok := d.l.Tombstone("s"); ok {
			t.Fatalf("round %d: a consumer whose handler is working was evicted: %s (%s)", round, ts.Reason, ts.Evidence)
		}
	}

	close(release)
	if acks := <-acked; acks["s"] != commit {
		t.Errorf("acked %v, want s at %s", acks, commit)
	}
	if sh, ok := d.l.Shape("s"); !ok || sh.FlushedLSN != commit {
		t.Errorf("shape s: %+v (%v), want flushed at %s", sh, ok, commit)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestConsumerThatStopsReadingIsStalled: a consumer keeps its change
// stream open (so its lease holds) but reads nothing from it. The challenge
// goes unanswered and the shape is evicted as stalled once the challenge
// timeout has passed.
func TestConsumerThatStopsReadingIsStalled(t *testing.T) {
	d := newDaemon(t)
	k, start := d.consumer("stuck", "s")
	s, err := k.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d.feed(start + 0x100)
	d.pass(stallGrace)
	d.pass(challengeTimeout)
	ts, ok := d.l.Tombstone("s")
	if !ok || ts.Reason != ledger.ReasonStalled {
		t.Fatalf("tombstone %+v (%v), want the shape evicted as stalled", ts, ok)
	}
	if c, _ := d.l.Consumer("stuck"); c.Gone || !c.Streaming {
		t.Errorf("consumer %+v: want it live and streaming, only its shape stalled", c)
	}
}

// TestHandlerErrorEndsRun: a handler error ends Run with that error, and
// the transaction is not acked.
func TestHandlerErrorEndsRun(t *testing.T) {
	d := newDaemon(t)
	k, start := d.consumer("failing", "s")
	d.feed(start + 0x100)
	boom := errors.New("boom")
	err := k.Run(context.Background(), func(context.Context, *client.Txn) error { return boom }, client.RunOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("Run: %v, want the handler's error", err)
	}
	if sh, _ := d.l.Shape("s"); sh.FlushedLSN >= start+0x100 {
		t.Errorf("shape s flushed at %s after its handler failed", sh.FlushedLSN)
	}
}
