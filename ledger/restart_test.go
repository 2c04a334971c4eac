package ledger_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// crashImage copies the committed state of an open ledger to a new file, as
// a crash at this instant would leave it (no clean-shutdown marker), and
// returns a config for it.
func crashImage(t *testing.T, l *ledger.Ledger, clk *fakeClock) ledger.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "crashed.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.WriteSnapshot(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return testConfig(path, clk)
}

func TestRestartExtendsLeasesAfterCleanShutdown(t *testing.T) {
	clk := newClock()
	cfg := testConfig(filepath.Join(t.TempDir(), "ledger.db"), clk)
	l, err := ledger.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, l, "c", 10*time.Second)
	mustShapes(t, l, "c", "a")
	if err := l.RecordTick(clk.Now()); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	now := clk.Advance(2 * time.Hour) // ledgerd was down far longer than the TTL
	l = openAt(t, cfg)
	c, ok := l.Consumer("c")
	if !ok || c.Gone || !c.ExpiresAt.Equal(now.Add(10*time.Second)) {
		t.Fatalf("consumer after restart = %+v, want live until now+ttl (I5)", c)
	}
	if _, ok := l.Shape("a"); !ok {
		t.Fatal("shape a evicted by the restart (I5)")
	}
	if evs := kinds(l.Events(0, 0)); !contains(evs, ledger.EventRestarted) {
		t.Fatalf("no restarted event in %v", evs)
	}
}

// TestRestartDrainDoesNotExpireLeases: a clean shutdown stops taking
// heartbeats before it is stamped (the daemon drains first). A lease that ran
// out during the drain, after the last reconcile tick, expired only because
// ledgerd stopped listening: it is extended, not evicted (I5).
func TestRestartDrainDoesNotExpireLeases(t *testing.T) {
	clk := newClock()
	cfg := testConfig(filepath.Join(t.TempDir(), "ledger.db"), clk)
	l, err := ledger.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, l, "c", 2*time.Second) // expires at t0+2s
	mustShapes(t, l, "c", "a")
	clk.Advance(time.Second)
	if err := l.RecordTick(clk.Now()); err != nil { // last reconcile pass at t0+1s
		t.Fatal(err)
	}
	clk.Advance(3 * time.Second)      // the drain: no heartbeats taken, lease runs out at t0+2s
	if err := l.Close(); err != nil { // clean shutdown stamped at t0+4s
		t.Fatal(err)
	}
	now := clk.Advance(time.Minute)
	l = openAt(t, cfg)
	c, ok := l.Consumer("c")
	if !ok || c.Gone || !c.ExpiresAt.Equal(now.Add(2*time.Second)) {
		t.Fatalf("consumer after restart = %+v, want live until now+ttl (I5)", c)
	}
	if _, ok := l.Shape("a"); !ok {
		t.Fatal("shape a evicted by the restart although its lease ran out only during the drain (I5)")
	}
}

func TestRestartEvictsLeasesExpiredBeforeCrash(t *testing.T) {
	l, clk, _ := newLedger(t)
	mustRegister(t, l, "dead", 10*time.Second)
	alive := mustRegister(t, l, "alive", 10*time.Second)
	mustShapes(t, l, "dead", "d1", "d2")
	mustShapes(t, l, "alive", "a1")
	l.Track(100, 110, []string{"d1", "a1"})
	clk.Advance(15 * time.Second)
	if _, err := l.Heartbeat("alive", alive.Lease, nil); err != nil {
		t.Fatal(err)
	}
	// The reconciler's tick at t0+15s: "dead" expired at t0+10s, before it.
	if err := l.RecordTick(clk.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := crashImage(t, l, clk)
	now := clk.Advance(time.Hour)
	r := openAt(t, cfg)

	d, _ := r.Consumer("dead")
	if !d.Gone || d.GoneReason != ledger.ReasonExpiredBeforeRestart {
		t.Fatalf("dead consumer after restart = %+v, want gone expired_before_restart", d)
	}
	for _, id := range []string{"d1", "d2"} {
		ts, ok := r.Tombstone(id)
		if !ok || ts.Reason != ledger.ReasonExpiredBeforeRestart || ts.Actor != "restart" {
			t.Fatalf("tombstone of %s = %+v %v", id, ts, ok)
		}
		var g *ledger.GoneError
		if err := r.Ack(id, 100); !errors.As(err, &g) || g.Reason != ledger.ReasonExpiredBeforeRestart {
			t.Fatalf("ack %s after restart: %v, want gone (I4)", id, err)
		}
	}
	a, _ := r.Consumer("alive")
	if a.Gone || !a.ExpiresAt.Equal(now.Add(10*time.Second)) {
		t.Fatalf("alive consumer after restart = %+v, want extended to now+ttl (I5)", a)
	}
	if _, ok := r.Shape("a1"); !ok {
		t.Fatal("shape of the live consumer was evicted (I5)")
	}
	if err := r.CheckLease("alive", alive.Lease); err != nil {
		t.Fatalf("lease of the live consumer after restart: %v", err)
	}
	if _, err := r.Register(ledger.ConsumerSpec{ID: "alive"}); !errors.Is(err, ledger.ErrConsumerExists) {
		t.Fatalf("register over an extended lease: %v, want ErrConsumerExists", err)
	}
}

func TestRestartLongDowntimeWithinLeaseEvictsNothing(t *testing.T) {
	l, clk, _ := newLedger(t)
	c := mustRegister(t, l, "c", 10*time.Second)
	mustShapes(t, l, "c", "a")
	clk.Advance(5 * time.Second)
	if _, err := l.Heartbeat("c", c.Lease, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	// The heartbeat went through the group commit; the tick is queued behind
	// it, so the crash image holds both.
	clk.Advance(time.Second)
	if err := l.RecordTick(clk.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := crashImage(t, l, clk)
	now := clk.Advance(30 * 24 * time.Hour)
	r := openAt(t, cfg)
	got, _ := r.Consumer("c")
	if got.Gone || !got.ExpiresAt.Equal(now.Add(10*time.Second)) {
		t.Fatalf("consumer after a month of downtime = %+v, want live until now+ttl (I5)", got)
	}
	if len(got.Inventory) != 1 || got.Inventory[0] != "a" {
		t.Fatalf("inventory not persisted: %+v", got)
	}
	if _, ok := r.Shape("a"); !ok {
		t.Fatal("shape evicted by downtime alone (I5)")
	}
}

func TestRestartStreamingConsumerHeldItsLease(t *testing.T) {
	l, clk, _ := newLedger(t)
	mustRegister(t, l, "streamer", 10*time.Second)
	mustShapes(t, l, "streamer", "b")
	l.SetStreaming("streamer", true)
	clk.Advance(time.Minute) // far past the TTL: the open stream keeps the lease
	if err := l.RecordTick(clk.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := crashImage(t, l, clk)
	now := clk.Advance(time.Hour)
	r := openAt(t, cfg)
	got, _ := r.Consumer("streamer")
	if got.Gone || got.Streaming || !got.ExpiresAt.Equal(now.Add(10*time.Second)) {
		t.Fatalf("streaming consumer after restart = %+v, want live, not streaming, until now+ttl", got)
	}
	if _, ok := r.Shape("b"); !ok {
		t.Fatal("shape of a streaming consumer evicted by the restart")
	}
}

func TestRestartTimelineChangeIsRecorded(t *testing.T) {
	clk := newClock()
	cfg := testConfig(filepath.Join(t.TempDir(), "ledger.db"), clk)
	l, err := ledger.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Identity.Timeline = 2 // after a failover
	l = openAt(t, cfg)
	if !contains(kinds(l.Events(0, 0)), ledger.EventTimeline) {
		t.Fatal("timeline change not journaled")
	}
}

func kinds(evs []ledger.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Kind
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
