package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/reconcile"
)

// TestLeaseExpired: a consumer with no heartbeat and no stream for its TTL is
// ended with its shapes, as lease_expired with the timing as evidence; one
// that heartbeats, or streams, is not.
func TestLeaseExpired(t *testing.T) {
	e := newEnv(t, nil)
	dead := e.register("dead", 10*time.Second)
	e.shapes("dead", "d1", "d2")
	hb := e.register("hb", 10*time.Second)
	e.shapes("hb", "h1")
	e.register("streamer", 10*time.Second)
	e.shapes("streamer", "s1")
	e.l.SetStreaming("streamer", true)
	e.track("d1", "h1", "s1")

	e.clk.Advance(time.Second)
	for range 9 { // up to the TTL: nobody expires
		e.pass()
		e.clk.Advance(time.Second)
		e.heartbeat(hb, nil)
	}
	e.live("d1", "d2", "h1", "s1")
	e.clk.Advance(time.Second) // dead: last heartbeat 12:00:00 + 10s
	e.heartbeat(hb, nil)
	e.pass()
	e.evicted("d1", ledger.ReasonLeaseExpired, "last heartbeat 2026-03-01 12:00:00.000Z", "ttl 10s", "now 2026-03-01 12:00:11.000Z")
	e.evicted("d2", ledger.ReasonLeaseExpired)
	e.live("h1", "s1")
	if c, _ := e.l.Consumer("dead"); !c.Gone || c.GoneReason != ledger.ReasonLeaseExpired {
		t.Fatalf("dead consumer = %+v, want gone as lease_expired", c)
	}
	if err := e.l.CheckLease("dead", dead.Lease); err == nil {
		t.Fatal("the expired lease still checks")
	}
	if got := e.metric("ledgerd_reconcile_evictions_total", "reason", "lease_expired"); got != 2 {
		t.Errorf("lease_expired evictions metric = %v, want 2", got)
	}
	if e.sync.n == 0 {
		t.Error("delivery was not synced after the evictions")
	}
	// Idempotent: another pass changes nothing.
	e.pass()
	e.live("h1", "s1")
	if got := e.metric("ledgerd_reconcile_evictions_total", "reason", "lease_expired"); got != 2 {
		t.Errorf("after a second pass evictions = %v, want 2", got)
	}
}

// TestProcessGone: a consumer registered on this host whose pid, seen
// running, is gone, or was reused by a process started at another time, is
// ended as process_gone. A live one, one on another host, one without a pid,
// and one whose pid this host never saw running as registered (another pid
// namespace behind the same host name) are not.
func TestProcessGone(t *testing.T) {
	e := newEnv(t, nil)
	e.proc.set(100, "5000")
	e.proc.set(200, "6000")
	e.proc.set(300, "7000")
	e.proc.set(400, "9999") // registered start 8000: not the process the consumer is
	e.registerSpec(ledger.ConsumerSpec{ID: "alive", TTL: time.Hour, PID: 100, ProcStart: "5000", Host: host})
	e.registerSpec(ledger.ConsumerSpec{ID: "gone", TTL: time.Hour, PID: 200, Host: host})
	e.registerSpec(ledger.ConsumerSpec{ID: "reused", TTL: time.Hour, PID: 300, Host: host})
	e.registerSpec(ledger.ConsumerSpec{ID: "elsewhere", TTL: time.Hour, PID: 200, Host: "other-host"})
	e.registerSpec(ledger.ConsumerSpec{ID: "nopid", TTL: time.Hour, Host: host})
	e.registerSpec(ledger.ConsumerSpec{ID: "invisible", TTL: time.Hour, PID: 500, Host: host}) // no pid 500 here
	e.registerSpec(ledger.ConsumerSpec{ID: "foreign", TTL: time.Hour, PID: 400, ProcStart: "8000", Host: host})
	for _, id := range []string{"alive", "gone", "reused", "elsewhere", "nopid", "invisible", "foreign"} {
		e.shapes(id, id+"-s")
	}
	e.pass() // the probe sees the pids it can
	e.live("alive-s", "gone-s", "reused-s", "elsewhere-s", "nopid-s", "invisible-s", "foreign-s")

	e.clk.Advance(time.Second)
	e.proc.set(200, "")     // the process of "gone" exited
	e.proc.set(300, "7777") // pid 300 now belongs to another process
	e.proc.set(400, "")
	e.pass()
	e.live("alive-s", "elsewhere-s", "nopid-s", "invisible-s", "foreign-s")
	e.evicted("gone-s", ledger.ReasonProcessGone, "pid 200", "seen running with start time 6000 since 2026-03-01 12:00:00.000Z", "host "+host)
	e.evicted("reused-s", ledger.ReasonProcessGone, "pid 300 now has start time 7777, seen with start time 7000", "pid reused")
	if c, _ := e.l.Consumer("gone"); !c.Gone || c.GoneReason != ledger.ReasonProcessGone {
		t.Fatalf("consumer gone = %+v, want ended as process_gone", c)
	}
	// A consumer that registers again with a new process is judged afresh.
	e.proc.set(600, "123")
	e.registerSpec(ledger.ConsumerSpec{ID: "gone", TTL: time.Hour, PID: 600, Host: host})
	e.shapes("gone", "gone-s2")
	e.pass()
	e.live("gone-s2")
}

// TestInventory: a heartbeat's shape list evicts the consumer's shapes it
// omits, but only those created before the previous heartbeat: a shape
// created since (its PUT racing the list) is not judged.
func TestInventory(t *testing.T) {
	e := newEnv(t, nil)
	c := e.register("c", time.Hour)
	e.shapes("c", "kept", "lost")
	e.clk.Advance(time.Second)
	e.heartbeat(c, []string{"kept", "lost"}) // previous heartbeat, at 12:00:01
	e.clk.Advance(time.Second)
	e.shapes("c", "new") // created after the previous heartbeat
	e.clk.Advance(time.Second)
	e.heartbeat(c, []string{"kept"}) // the per-shape worker of "lost" died; "new" raced the list
	e.pass()
	e.live("kept", "new")
	e.evicted("lost", ledger.ReasonNotInInventory, "heartbeat at 2026-03-01 12:00:03.000Z", "previous heartbeat at 2026-03-01 12:00:01.000Z")
	if c, _ := e.l.Consumer("c"); c.Gone {
		t.Fatal("the consumer was ended; only its orphaned shape should go")
	}
	// The next heartbeat still omits "new", which now predates the previous
	// heartbeat: it is judged.
	e.clk.Advance(time.Second)
	e.heartbeat(c, []string{"kept"})
	e.pass()
	e.evicted("new", ledger.ReasonNotInInventory)
	// A heartbeat without a list judges nothing.
	e.shapes("c", "later")
	e.clk.Advance(time.Second)
	e.heartbeat(c, nil)
	e.clk.Advance(time.Second)
	e.heartbeat(c, nil)
	e.pass()
	e.live("kept", "later")
}

// TestInventoryIgnoresStreamEvents: a change stream opening or closing
// between two heartbeats is not a heartbeat: a shape created after the
// previous heartbeat call, but before the stream event, raced the list and is
// not judged by it.
func TestInventoryIgnoresStreamEvents(t *testing.T) {
	e := newEnv(t, nil)
	c := e.register("c", time.Hour)
	e.shapes("c", "kept")
	e.clk.Advance(time.Second)
	e.heartbeat(c, []string{"kept"}) // previous heartbeat call, at 12:00:01
	e.clk.Advance(time.Second)
	e.shapes("c", "new") // PUT completes while the next list is being built
	e.clk.Advance(time.Second)
	e.l.SetStreaming("c", true) // the stream (re)opens before that heartbeat arrives
	e.clk.Advance(time.Second)
	e.heartbeat(c, []string{"kept"})
	e.pass()
	e.live("kept", "new")
}

// TestProgressChallenge: a shape pending past the stall grace without ack
// progress is challenged once; ack progress cancels the challenge, a defer
// answer restarts the grace, and silence past the challenge timeout evicts
// it as stalled. A shape that acks within the grace is never challenged.
func TestProgressChallenge(t *testing.T) {
	e := newEnv(t, nil)
	e.register("c", time.Hour)
	e.l.SetStreaming("c", true)
	e.shapes("c", "acker", "silent", "deferrer", "healthy")
	first := e.track("acker", "silent", "deferrer", "healthy")
	e.clk.Advance(30 * time.Second)
	if err := e.l.Ack("healthy", first); err != nil {
		t.Fatal(err)
	}
	e.pass()
	if n := e.ch.count(); n != 0 {
		t.Fatalf("%d challenges within the grace", n)
	}
	e.clk.Advance(30 * time.Second) // 60s since pending
	e.pass()
	if got := e.ch.sent; fmt.Sprint(got) != "[c/acker c/deferrer c/silent]" {
		t.Fatalf("challenges = %v, want the three stalled shapes", got)
	}
	e.pass() // no second challenge while one is outstanding
	if n := e.ch.count(); n != 3 {
		t.Fatalf("challenges after another pass = %d, want 3", n)
	}
	// acker shows ack progress (a second transaction stays pending);
	// deferrer answers with a defer; silent says nothing.
	second := e.track("acker", "silent", "deferrer")
	e.clk.Advance(5 * time.Second)
	if err := e.l.Ack("acker", first); err != nil {
		t.Fatal(err)
	}
	if err := e.r.Defer("c", []string{"deferrer"}); err != nil {
		t.Fatal(err)
	}
	e.pass()
	e.clk.Advance(5 * time.Second) // 10s after the challenge
	e.pass()
	e.live("acker", "deferrer", "healthy")
	e.evicted("silent", ledger.ReasonStalled, "challenged 2026-03-01 12:01:00.000Z", "no ack or defer within 10s", "now 2026-03-01 12:01:10.000Z")
	if got := e.metric("ledgerd_reconcile_challenges_total"); got != 3 {
		t.Errorf("challenges metric = %v, want 3", got)
	}
	// The defer restarted deferrer's grace: no new challenge before 60s
	// after it (12:01:05), one at it.
	e.clk.Advance(54 * time.Second) // 12:02:04
	e.pass()
	if n := e.ch.count(); n != 3 {
		t.Fatalf("challenges before the deferred grace ran out = %d (%v)", n, e.ch.sent)
	}
	e.clk.Advance(time.Second) // 12:02:05: acker's ack at 12:01:05 also restarted its grace
	e.pass()
	later := append([]string{}, e.ch.sent[3:]...)
	slices.Sort(later)
	if got := fmt.Sprint(later); got != "[c/acker c/deferrer]" {
		t.Fatalf("challenges after the restarted grace = %v", got)
	}
	// Both answer by acking everything: nothing pending, nothing evicted.
	for _, id := range []string{"acker", "deferrer"} {
		if err := e.l.Ack(id, second); err != nil {
			t.Fatal(err)
		}
	}
	e.clk.Advance(time.Minute)
	e.pass()
	e.live("acker", "deferrer", "healthy")
	// The journal has the challenges.
	if err := e.l.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	var challenged int
	for _, ev := range e.l.Events(0, 0) {
		if ev.Kind == ledger.EventChallenged {
			challenged++
		}
	}
	if challenged != 5 {
		t.Errorf("journal has %d challenged events, want 5", challenged)
	}
}

// TestWALBudget: a pending shape pinning more than the budget of
// pg_current_wal_lsn() - its pending LSN is evicted as wal_budget; one
// within the budget is not, and the probe is off at 0.
func TestWALBudget(t *testing.T) {
	e := newEnv(t, func(c *reconcile.Config) { c.MaxShapeLagBytes = 1 << 20 })
	e.register("c", time.Hour)
	e.l.SetStreaming("c", true)
	e.shapes("c", "old", "recent", "idle")
	oldLSN := e.track("old")
	recentLSN := e.track("recent")
	walEnd := oldLSN + 1<<20 + 1
	if recentLSN <= oldLSN+1 || walEnd-recentLSN > 1<<20 {
		t.Fatal("test LSNs do not straddle the budget")
	}
	e.slot.set(func(s *reconcile.SlotState) { s.WALEnd = walEnd; s.ConfirmedFlush = oldLSN })
	e.pass()
	e.evicted("old", ledger.ReasonWALBudget, fmt.Sprintf("pending %s", oldLSN), "pins 1048577 bytes", "budget 1048576 bytes")
	e.live("recent", "idle")
	if got, want := e.l.SafeLSN(), recentLSN; got != want {
		t.Errorf("safe LSN after the eviction = %s, want %s", got, want)
	}

	off := newEnv(t, nil)
	off.register("c", time.Hour)
	off.l.SetStreaming("c", true)
	off.shapes("c", "old")
	lsn := off.track("old")
	off.slot.set(func(s *reconcile.SlotState) { s.WALEnd = lsn + 1<<40 })
	off.pass()
	off.live("old")
}

// TestCircuitBreaker: automatic evictions are limited to
// max(fraction x shapes, 10) per rolling minute; a trip is logged once,
// counted, and shown by the gauge; the held-back evictions happen when the
// window allows.
func TestCircuitBreaker(t *testing.T) {
	e := newEnv(t, func(c *reconcile.Config) { c.EvictMaxFraction = 0.1 })
	// 30 consumers with one shape each: 10% is 3, the floor 10 applies.
	for i := range 30 {
		id := fmt.Sprintf("c%02d", i)
		e.register(id, 10*time.Second)
		e.shapes(id, "s"+id)
	}
	e.clk.Advance(11 * time.Second) // every lease expired at once (a network partition, say)
	e.pass()
	if n := len(e.l.Shapes()); n != 20 {
		t.Fatalf("after the first pass %d shapes left, want 20 (10 evicted)", n)
	}
	if got := e.metric("ledgerd_reconcile_breaker_trips_total"); got != 1 {
		t.Errorf("trips = %v, want 1", got)
	}
	if got := e.metric("ledgerd_reconcile_breaker_tripped"); got != 1 {
		t.Errorf("tripped gauge = %v, want 1", got)
	}
	e.clk.Advance(30 * time.Second)
	e.pass() // same window: nothing more, and no second trip counted
	if n := len(e.l.Shapes()); n != 20 {
		t.Fatalf("within the minute %d shapes left, want 20", n)
	}
	if got := e.metric("ledgerd_reconcile_breaker_trips_total"); got != 1 {
		t.Errorf("trips while still open = %v, want 1", got)
	}
	e.clk.Advance(30 * time.Second) // the first 10 leave the window
	e.pass()
	if n := len(e.l.Shapes()); n != 10 {
		t.Fatalf("a minute later %d shapes left, want 10", n)
	}
	e.clk.Advance(time.Minute)
	e.pass() // the last 10 fit: the breaker closes
	if n := len(e.l.Shapes()); n != 0 {
		t.Fatalf("two minutes later %d shapes left, want 0", n)
	}
	if got := e.metric("ledgerd_reconcile_breaker_tripped"); got != 0 {
		t.Errorf("tripped gauge after the backlog = %v, want 0", got)
	}
	if got := e.metric("ledgerd_reconcile_evictions_total", "reason", "lease_expired"); got != 30 {
		t.Errorf("evictions = %v, want 30", got)
	}
	if n := strings.Count(e.logs.String(), "circuit breaker tripped"); n != 1 {
		t.Errorf("trip logged %d times over one trip, want 1", n)
	}

	// With 100 shapes and fraction 0.5, 50 go in a minute.
	big := newEnv(t, nil)
	for i := range 100 {
		id := fmt.Sprintf("c%03d", i)
		big.register(id, 10*time.Second)
		big.shapes(id, "s"+id)
	}
	big.clk.Advance(11 * time.Second)
	big.pass()
	if n := len(big.l.Shapes()); n != 50 {
		t.Fatalf("fraction 0.5 of 100: %d shapes left, want 50", n)
	}
}

// TestBreakerLargeConsumer: a single consumer owning more shapes than the
// limit is ended (with all its shapes in one transaction) when nothing else
// was evicted in the window.
func TestBreakerLargeConsumer(t *testing.T) {
	e := newEnv(t, nil)
	e.register("big", 10*time.Second)
	for i := range 30 {
		e.shapes("big", fmt.Sprintf("s%02d", i))
	}
	e.register("small", time.Hour)
	e.shapes("small", "x")
	e.clk.Advance(11 * time.Second)
	e.pass() // limit max(0.5 x 31, 10) = 15 < 30, window empty
	if n := len(e.l.Shapes()); n != 1 {
		t.Fatalf("%d shapes left, want only the small consumer's", n)
	}
}

// racyLedger runs a hook right after the reconciler's first read of the
// consumers or the shapes: the reconciler then decides on an observation
// that is already old.
type racyLedger struct {
	*ledger.Ledger
	afterRead      func() // after the first read of either
	afterConsumers func() // after the read of the consumers
}

func (r *racyLedger) fire() {
	if f := r.afterRead; f != nil {
		r.afterRead = nil
		f()
	}
}

func (r *racyLedger) Consumer(id string) (ledger.Consumer, bool) {
	defer r.fire()
	if f := r.afterConsumers; f != nil {
		r.afterConsumers = nil
		defer f()
	}
	return r.Ledger.Consumer(id)
}

func (r *racyLedger) Owners() []string {
	defer r.fire()
	return r.Ledger.Owners()
}

func (r *racyLedger) ShapesOf(consumer string) []ledger.Shape {
	defer r.fire()
	return r.Ledger.ShapesOf(consumer)
}

func (r *racyLedger) ShapesNotIn(consumer string, held []string, createdBefore time.Time) []ledger.Shape {
	defer r.fire()
	return r.Ledger.ShapesNotIn(consumer, held, createdBefore)
}

// TestRegistrationDuringPass: a consumer that registers and creates a shape
// while a pass reads the state is not mistaken for an unknown owner.
func TestRegistrationDuringPass(t *testing.T) {
	e := newEnv(t, nil)
	racy := &racyLedger{Ledger: e.l}
	racy.afterRead = func() {
		e.register("late", time.Hour)
		e.shapes("late", "lx")
	}
	r, err := reconcile.New(reconcile.Config{Ledger: racy, Clock: e.clk, Host: host, Process: e.proc, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.live("lx")
}

// TestEpochRace: a consumer whose expired lease the reconciler observed, but
// which registered again before the expiry was applied, keeps its new lease
// and its shapes; the next pass judges the new lease.
func TestEpochRace(t *testing.T) {
	e := newEnv(t, nil)
	e.register("c", 10*time.Second)
	e.shapes("c", "s")
	e.track("s")
	e.clk.Advance(11 * time.Second)
	racy := &racyLedger{Ledger: e.l}
	var again ledger.Consumer
	racy.afterConsumers = func() { again = e.register("c", 10*time.Second) }
	r, err := reconcile.New(reconcile.Config{Ledger: racy, Clock: e.clk, Host: host, Process: e.proc, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.live("s")
	if err := e.l.CheckLease("c", again.Lease); err != nil {
		t.Fatalf("the new lease: %v", err)
	}
	// The new lease in turn runs out: now it is ended.
	e.clk.Advance(10 * time.Second)
	if err := r.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.evicted("s", ledger.ReasonLeaseExpired)
}

// TestDeadConsumerStopsPinning is I3 in the reconciler: a consumer dies
// holding an unacked transaction; within TTL + 2 x interval on the clock the
// safe LSN moves past that transaction.
func TestDeadConsumerStopsPinning(t *testing.T) {
	const ttl, interval = 10 * time.Second, time.Second
	e := newEnv(t, func(c *reconcile.Config) { c.Interval = interval })
	live := e.register("live", ttl)
	e.shapes("live", "l")
	e.register("dead", ttl)
	e.shapes("dead", "d")
	pinned := e.track("d", "l")
	if err := e.l.Ack("l", pinned); err != nil {
		t.Fatal(err)
	}
	e.track() // later traffic touching no shape
	if got := e.l.SafeLSN(); got != pinned {
		t.Fatalf("safe LSN = %s, want it pinned at %s", got, pinned)
	}
	start := e.clk.Now()
	// The dead consumer's last sign of life was its registration, at start;
	// passes run every interval, at an arbitrary phase.
	e.clk.Advance(interval / 3)
	for e.l.SafeLSN() <= pinned {
		if elapsed := e.clk.Now().Sub(start); elapsed > ttl+2*interval {
			t.Fatalf("safe LSN still %s after %v (TTL %v + 2 x %v)", e.l.SafeLSN(), elapsed, ttl, interval)
		}
		e.heartbeat(live, nil)
		e.pass()
		e.clk.Advance(interval)
	}
	e.evicted("d", ledger.ReasonLeaseExpired)
	e.live("l")
	// What is reported to Postgres follows once committed.
	if err := e.l.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.l.FlushLSN()
	if err := e.l.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.l.FlushLSN(); got <= pinned {
		t.Errorf("flush LSN %s, want past the dead consumer's %s", got, pinned)
	}
}

// TestSlotAudit: the audit exports the slot's state and flags a confirmed
// flush that went backwards or moved beyond what ledgerd reported; an
// unreadable slot is an error of the pass, not a stop of the probes.
func TestSlotAudit(t *testing.T) {
	e := newEnv(t, nil)
	e.slot.set(func(s *reconcile.SlotState) {
		*s = reconcile.SlotState{ConfirmedFlush: 0x5000, RestartLSN: 0x4000, WALEnd: 0x9000, WALStatus: "reserved",
			SafeWALSize: 1 << 30, HasSafeWALSize: true, Active: true, ActivePID: 4242, RetainedBytes: 0x5000}
	})
	e.pass() // the slot is ahead of a fresh ledger: past it, but not moved by anyone between audits
	if got := e.metric("ledgerd_slot_audit_anomalies_total", "anomaly", string(reconcile.AnomalyMovedElsewhere)); got != 0 {
		t.Fatalf("moved-elsewhere at start-up = %v, want 0", got)
	}
	for name, want := range map[string]float64{"ledgerd_slot_audit_restart_lsn": 0x4000, "ledgerd_slot_audit_safe_wal_size_bytes": 1 << 30,
		"ledgerd_slot_audit_active_pid": 4242, "ledgerd_slot_audit_retained_wal_bytes": 0x5000, "ledgerd_slot_audit_up": 1,
		"ledgerd_slot_audit_confirmed_flush_lsn": 0x5000} {
		if got := e.metric(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := e.metric("ledgerd_slot_audit_wal_status", "status", "reserved"); got != 1 {
		t.Errorf("wal_status reserved = %v, want 1", got)
	}
	e.slot.set(func(s *reconcile.SlotState) { s.ConfirmedFlush = 0x6000 }) // nobody in ledgerd reported it
	e.pass()
	if got := e.metric("ledgerd_slot_audit_anomalies_total", "anomaly", string(reconcile.AnomalyMovedElsewhere)); got != 1 {
		t.Errorf("moved-elsewhere = %v, want 1", got)
	}
	e.slot.set(func(s *reconcile.SlotState) { s.ConfirmedFlush = 0x3000 })
	e.pass()
	if got := e.metric("ledgerd_slot_audit_anomalies_total", "anomaly", string(reconcile.AnomalyBackwards)); got != 1 {
		t.Errorf("backwards = %v, want 1", got)
	}
	e.slot.set(func(s *reconcile.SlotState) { s.ConfirmedFlush = 0x3000 })
	e.pass() // unchanged: no new finding
	if got := e.metric("ledgerd_slot_audit_anomalies_total", "anomaly", string(reconcile.AnomalyBackwards)); got != 1 {
		t.Errorf("backwards after a steady audit = %v, want 1", got)
	}

	// The slot cannot be read: the pass reports it, and still expires leases.
	e.slot.set(func(*reconcile.SlotState) {})
	e.slot.err = errors.New("connection refused")
	e.register("c", time.Second)
	e.shapes("c", "s")
	e.clk.Advance(2 * time.Second)
	if err := e.r.Pass(context.Background()); err == nil {
		t.Fatal("a pass with an unreadable slot reported no error")
	}
	e.evicted("s", ledger.ReasonLeaseExpired)
	if got := e.metric("ledgerd_slot_audit_up"); got != 0 {
		t.Errorf("slot up = %v after a failed audit", got)
	}
}

// TestTickRecorded: every pass records the liveness tick (I5) at the clock's
// time.
func TestTickRecorded(t *testing.T) {
	e := newEnv(t, nil)
	e.clk.Advance(time.Hour)
	e.pass()
	if got := e.metric("ledgerd_reconcile_last_pass_timestamp_seconds"); got != float64(e.clk.Now().Unix()) {
		t.Errorf("last pass = %v, want %v", got, e.clk.Now().Unix())
	}
	if got := e.metric("ledgerd_reconcile_passes_total"); got != 1 {
		t.Errorf("passes = %v, want 1", got)
	}
}
