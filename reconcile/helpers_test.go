package reconcile_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/internal/clocktest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/reconcile"
)

// clock is a controlled clock: time moves only when a test says so.
type clock = clocktest.Clock

// challenger records the challenges sent.
type challenger struct {
	mu   sync.Mutex
	sent []string // "consumer/shape"
}

func (c *challenger) Challenge(consumer, shape string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, consumer+"/"+shape)
}

func (c *challenger) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sent)
}

// syncer counts Sync calls.
type syncer struct{ n int }

func (s *syncer) Sync() { s.n++ }

// slot is a controlled slot auditor.
type slot struct {
	mu  sync.Mutex
	st  reconcile.SlotState
	err error
}

func (s *slot) AuditSlot(context.Context) (reconcile.SlotState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st, s.err
}

func (s *slot) set(f func(*reconcile.SlotState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.st)
}

// procs is a controlled process table: pid -> start time.
type procs struct {
	mu    sync.Mutex
	alive map[int]string
}

func (p *procs) StartTime(pid int) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	start, ok := p.alive[pid]
	if !ok {
		return "", fmt.Errorf("%w: pid %d", reconcile.ErrNoProcess, pid)
	}
	return start, nil
}

func (p *procs) set(pid int, start string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if start == "" {
		delete(p.alive, pid)
		return
	}
	p.alive[pid] = start
}

const host = "db-host-1"

// env is a real ledger in a temporary directory with a reconciler over it
// whose clock, challenger, slot and process table the test controls.
type env struct {
	t    testing.TB
	clk  *clock
	l    *ledger.Ledger
	r    *reconcile.Reconciler
	ch   *challenger
	sync *syncer
	slot *slot
	proc *procs
	reg  *prometheus.Registry
	logs *logBuffer // the reconciler's log lines
	lsn  ledger.LSN // last commit LSN tracked
}

// logBuffer collects log lines written from any goroutine.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newEnv(t testing.TB, mod func(*reconcile.Config)) *env {
	t.Helper()
	e := &env{t: t, clk: clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)), ch: &challenger{}, sync: &syncer{},
		slot: &slot{}, proc: &procs{alive: map[int]string{}}, reg: prometheus.NewRegistry(), logs: &logBuffer{}, lsn: 0x1000000}
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := ledger.Open(ledger.Config{Path: path, Clock: e.clk, Logger: zerolog.Nop(),
		Identity: ledger.Identity{SystemID: "7301234567890123456", Timeline: 1, Database: "app", Slot: "ledgerd"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the ledger: %v", err)
		}
		probs, err := ledger.Verify(path)
		if err != nil {
			t.Errorf("verify: %v", err)
		}
		for _, p := range probs {
			t.Errorf("verify: %s", p)
		}
	})
	e.l = l
	cfg := reconcile.Config{Ledger: l, Challenger: e.ch, Syncer: e.sync, Slot: e.slot, Process: e.proc, Host: host,
		Clock: e.clk, Interval: time.Second, StallGrace: time.Minute, ChallengeTimeout: 10 * time.Second, Logger: zerolog.New(e.logs)}
	if mod != nil {
		mod(&cfg)
	}
	r, err := reconcile.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.r = r
	e.reg.MustRegister(r)
	return e
}

func (e *env) register(id string, ttl time.Duration) ledger.Consumer {
	e.t.Helper()
	return e.registerSpec(ledger.ConsumerSpec{ID: id, TTL: ttl})
}

func (e *env) registerSpec(spec ledger.ConsumerSpec) ledger.Consumer {
	e.t.Helper()
	c, err := e.l.Register(spec)
	if err != nil {
		e.t.Fatalf("register %s: %v", spec.ID, err)
	}
	return c
}

func (e *env) shapes(consumer string, ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		if _, _, err := e.l.PutShape(ledger.ShapeSpec{ID: id, Consumer: consumer, Table: "public.t"}); err != nil {
			e.t.Fatalf("put shape %s: %v", id, err)
		}
	}
}

// track hands the next transaction to shapes and returns its commit LSN.
func (e *env) track(shapes ...string) ledger.LSN {
	e.t.Helper()
	e.lsn += 0x100
	commit := e.lsn
	e.l.Track(commit, commit+0x10, shapes)
	return commit
}

func (e *env) heartbeat(c ledger.Consumer, inventory []string) {
	e.t.Helper()
	if _, err := e.l.Heartbeat(c.ID, c.Lease, inventory); err != nil {
		e.t.Fatalf("heartbeat %s: %v", c.ID, err)
	}
}

func (e *env) pass() {
	e.t.Helper()
	if err := e.r.Pass(context.Background()); err != nil {
		e.t.Fatalf("pass: %v", err)
	}
}

// live fails the test unless every shape is still tracked.
func (e *env) live(ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		if _, ok := e.l.Shape(id); !ok {
			ts, _ := e.l.Tombstone(id)
			e.t.Fatalf("shape %s evicted (%s: %s), want it live", id, ts.Reason, ts.Evidence)
		}
	}
}

// evicted fails the test unless the shape was evicted by the reconciler for
// reason with evidence holding every one of wantEvidence.
func (e *env) evicted(id string, reason ledger.Reason, wantEvidence ...string) ledger.Tombstone {
	e.t.Helper()
	if _, ok := e.l.Shape(id); ok {
		e.t.Fatalf("shape %s still live, want it evicted as %s", id, reason)
	}
	ts, ok := e.l.Tombstone(id)
	if !ok {
		e.t.Fatalf("shape %s has no tombstone", id)
	}
	if ts.Reason != reason || ts.Actor != reconcile.Actor {
		e.t.Fatalf("shape %s tombstone reason %s actor %q, want %s by %s (evidence %q)", id, ts.Reason, ts.Actor, reason, reconcile.Actor, ts.Evidence)
	}
	for _, w := range wantEvidence {
		if !strings.Contains(ts.Evidence, w) {
			e.t.Errorf("shape %s evidence %q lacks %q", id, ts.Evidence, w)
		}
	}
	return ts
}

// metric returns the value of a series (labels as name=value pairs).
func (e *env) metric(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				}
			}
		}
	}
	return 0
}

func matches(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}
