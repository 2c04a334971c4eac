package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

func TestRegisterLeaseLifecycle(t *testing.T) {
	l, clk, _ := newLedger(t)
	c1 := mustRegister(t, l, "c", 10*time.Second)
	if c1.Epoch != 1 || c1.Lease == "" || !c1.ExpiresAt.Equal(clk.Now().Add(10*time.Second)) {
		t.Fatalf("first registration = %+v", c1)
	}
	if _, err := l.Register(ledger.ConsumerSpec{ID: "c"}); !errors.Is(err, ledger.ErrConsumerExists) {
		t.Fatalf("register over a live lease: %v, want ErrConsumerExists", err)
	}
	clk.Advance(6 * time.Second)
	hb, err := l.Heartbeat("c", c1.Lease, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	if !hb.ExpiresAt.Equal(clk.Now().Add(10*time.Second)) || !hb.PrevHeartbeat.Equal(c1.LastHeartbeat) ||
		len(hb.Inventory) != 1 || !hb.InventoryAt.Equal(clk.Now()) {
		t.Fatalf("after heartbeat = %+v", hb)
	}
	if hb2, _ := l.Heartbeat("c", c1.Lease, nil); len(hb2.Inventory) != 1 {
		t.Fatal("a heartbeat without inventory dropped the last one")
	}
	if _, err := l.Heartbeat("c", "forged", nil); !errors.Is(err, ledger.ErrWrongLease) {
		t.Fatalf("heartbeat with a wrong lease: %v", err)
	}
	if _, err := l.Heartbeat("nobody", "x", nil); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("heartbeat of an unknown consumer: %v", err)
	}
	clk.Advance(11 * time.Second) // expired, not yet ended: the id may be taken again
	c2 := mustRegister(t, l, "c", 0)
	if c2.Epoch != 2 || c2.Lease == c1.Lease || c2.TTL != ledger.DefaultTTL {
		t.Fatalf("second registration = %+v", c2)
	}
	if err := l.CheckLease("c", c1.Lease); !errors.Is(err, ledger.ErrWrongLease) {
		t.Fatalf("old lease after re-registration: %v, want ErrWrongLease (fencing)", err)
	}
	if err := l.CheckLease("c", c2.Lease); err != nil {
		t.Fatal(err)
	}
}

func TestStreamingHoldsTheLease(t *testing.T) {
	l, clk, _ := newLedger(t)
	mustRegister(t, l, "c", 10*time.Second)
	l.SetStreaming("c", true)
	clk.Advance(time.Minute)
	if _, err := l.Register(ledger.ConsumerSpec{ID: "c"}); !errors.Is(err, ledger.ErrConsumerExists) {
		t.Fatalf("register while streaming: %v, want ErrConsumerExists", err)
	}
	l.SetStreaming("c", false)
	if c, _ := l.Consumer("c"); c.Streaming || !c.ExpiresAt.Equal(clk.Now().Add(10*time.Second)) {
		t.Fatalf("after the stream closed = %+v, want the lease to run from now", c)
	}
}

func TestReleaseEvictsShapes(t *testing.T) {
	l, _, _ := newLedger(t)
	c := mustRegister(t, l, "c", 0)
	other := mustRegister(t, l, "other", 0)
	mustShapes(t, l, "c", "a", "b")
	mustShapes(t, l, "other", "x")
	l.Track(100, 110, []string{"a", "b", "x"})
	mustAck(t, l, "x", 100)
	if err := l.Release("c", "wrong"); !errors.Is(err, ledger.ErrWrongLease) {
		t.Fatalf("release with a wrong lease: %v", err)
	}
	if err := l.Release("c", c.Lease); err != nil {
		t.Fatal(err)
	}
	wantSafe(t, l, 110) // nothing of c pins any more
	for _, id := range []string{"a", "b"} {
		if ts, ok := l.Tombstone(id); !ok || ts.Reason != ledger.ReasonReleased || ts.Consumer != "c" {
			t.Fatalf("tombstone of %s = %+v", id, ts)
		}
	}
	if _, err := l.Heartbeat("c", c.Lease, nil); !isGone(err) {
		t.Fatalf("heartbeat after release: %v, want gone", err)
	}
	if _, _, err := l.PutShape(ledger.ShapeSpec{ID: "n", Consumer: "c", Table: "t"}); !isGone(err) {
		t.Fatalf("put shape for a released consumer: %v, want gone", err)
	}
	if err := l.CheckLease("other", other.Lease); err != nil {
		t.Fatal(err)
	}
}

func TestExpireConsumerEvictsItsShapes(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a")
	l.Track(100, 110, []string{"a"})
	if err := l.ExpireConsumer("c", ledger.ReasonProcessGone, "pid 42 is gone"); err != nil {
		t.Fatal(err)
	}
	wantSafe(t, l, 110)
	var g *ledger.GoneError
	if err := l.Ack("a", 100); !errors.As(err, &g) || g.Reason != ledger.ReasonProcessGone || g.Evidence != "pid 42 is gone" {
		t.Fatalf("ack after expiry: %v", err)
	}
	if err := l.ExpireConsumer("c", ledger.ReasonLeaseExpired, ""); !isGone(err) {
		t.Fatalf("second expiry: %v, want gone", err)
	}
	evs := kinds(l.Events(0, 0))
	if !contains(evs, ledger.EventConsumerGone) || !contains(evs, ledger.EventEvicted) {
		t.Fatalf("journal = %v", evs)
	}
}

func TestPutShapeDefinitions(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustRegister(t, l, "d", 0)
	spec := ledger.ShapeSpec{ID: "s", Consumer: "c", Table: "public.t", Filter: map[string][]string{"tenant": {"b", "a"}}}
	sh, created, err := l.PutShape(spec)
	if err != nil || !created || sh.Generation != 1 {
		t.Fatalf("create: %+v %v %v", sh, created, err)
	}
	spec.Filter = map[string][]string{"tenant": {"a", "b", "a"}} // same set
	if _, created, err := l.PutShape(spec); err != nil || created {
		t.Fatalf("same definition again: created %v, %v", created, err)
	}
	for _, other := range []ledger.ShapeSpec{
		{ID: "s", Consumer: "c", Table: "public.t", Filter: map[string][]string{"tenant": {"a"}}},
		{ID: "s", Consumer: "c", Table: "public.u", Filter: spec.Filter},
		{ID: "s", Consumer: "d", Table: "public.t", Filter: spec.Filter},
	} {
		if _, _, err := l.PutShape(other); !errors.Is(err, ledger.ErrShapeConflict) {
			t.Fatalf("put %+v: %v, want ErrShapeConflict", other, err)
		}
	}
	for _, bad := range []ledger.ShapeSpec{
		{ID: "", Consumer: "c", Table: "t"},
		{ID: "a\x00b", Consumer: "c", Table: "t"},
		{ID: "ok", Consumer: "c"},
	} {
		if _, _, err := l.PutShape(bad); !errors.Is(err, ledger.ErrInvalid) {
			t.Fatalf("put %+v: %v, want ErrInvalid", bad, err)
		}
	}
	if _, _, err := l.PutShape(ledger.ShapeSpec{ID: "z", Consumer: "nobody", Table: "t"}); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("put for an unknown consumer: %v", err)
	}
	if err := l.DeleteShape("s"); err != nil {
		t.Fatal(err)
	}
	if ts, _ := l.Tombstone("s"); ts.Reason != ledger.ReasonReleased || ts.Actor != "consumer" {
		t.Fatalf("tombstone after delete = %+v", ts)
	}
	sh, created, err = l.PutShape(spec)
	if err != nil || !created || sh.Generation != 2 {
		t.Fatalf("recreate after delete: %+v %v %v, want generation 2 (I4)", sh, created, err)
	}
}

// Heartbeats are persisted through the group commit; Sync makes them
// durable, and a crash image holds them.
func TestHeartbeatDurableAfterSync(t *testing.T) {
	l, clk, _ := newLedger(t)
	c := mustRegister(t, l, "c", time.Minute)
	clk.Advance(time.Second)
	hb, err := l.Heartbeat("c", c.Lease, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := crashImage(t, l, clk)
	st, err := ledger.Load(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	got := st.Consumers[0]
	if !got.LastHeartbeat.Equal(hb.LastHeartbeat) || len(got.Inventory) != 2 {
		t.Fatalf("durable consumer = %+v, want heartbeat %s", got, hb.LastHeartbeat)
	}
	if err := openAt(t, cfg).CheckLease("c", c.Lease); err != nil {
		t.Fatalf("the lease after the crash: %v", err)
	}
}

func TestClosedLedger(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := l.Ack("s", 1); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("ack after close: %v", err)
	}
	if err := l.Sync(context.Background()); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("sync after close: %v", err)
	}
	if _, err := l.Register(ledger.ConsumerSpec{ID: "d"}); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("register after close: %v", err)
	}
}

func TestRecordAndStats(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a", "b")
	l.Track(100, 110, []string{"a"})
	if err := l.Record(ledger.Event{Kind: ledger.EventChallenged, Shape: "a", Detail: "pending 60s"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs := l.Events(0, 0)
	if last := evs[len(evs)-1]; last.Kind != ledger.EventChallenged || last.Shape != "a" || last.Time.IsZero() {
		t.Fatalf("last event = %+v", last)
	}
	st := l.Stats()
	if st.Shapes != 2 || st.Pending != 1 || st.LiveConsumers != 1 || st.SafeLSN != 100 || st.FlushLSN != 100 || st.Commits == 0 {
		t.Fatalf("stats = %+v", st)
	}
}
