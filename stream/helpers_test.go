package stream_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// cluster is the package's Postgres; tests run one at a time on it (some
// crash it), each in its own database with its own slot.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run()) // fuzz workers run FuzzDecode only: no Postgres
	}
	os.Exit(pgtest.Run(m, pgtest.Options{}, &cluster))
}

// recorder is the test Handler: it records transactions and reports the
// flush position the test hands in, or, in auto mode, everything handled
// (and the WAL end while idle).
type recorder struct {
	mu    sync.Mutex
	txns  []*stream.Txn
	auto  bool
	flush ledger.LSN
	last  ledger.LSN // end LSN of the last handled transaction
	idle  ledger.LSN
	dups  int // transactions handed twice (by commit LSN)
	seen  map[ledger.LSN]bool
	// ignoreIdle makes auto mode report only handled transactions, so the
	// slot can advance only through transactions (heartbeats).
	ignoreIdle bool
}

func newRecorder(auto bool) *recorder {
	return &recorder{auto: auto, seen: map[ledger.LSN]bool{}}
}

func (r *recorder) HandleTxn(_ context.Context, txn *stream.Txn) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[txn.CommitLSN] {
		r.dups++
	}
	r.seen[txn.CommitLSN] = true
	r.txns = append(r.txns, txn)
	r.last = max(r.last, txn.EndLSN)
	return nil
}

func (r *recorder) Idle(walEnd ledger.LSN) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ignoreIdle {
		r.idle = max(r.idle, walEnd)
	}
}

func (r *recorder) FlushLSN() ledger.LSN {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.auto {
		return max(r.last, r.idle)
	}
	return r.flush
}

func (r *recorder) setFlush(l ledger.LSN) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flush = l
}

func (r *recorder) setAuto() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.auto = true
}

// duplicates is the number of transactions handed more than once.
func (r *recorder) duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dups
}

// snapshot returns the transactions recorded so far.
func (r *recorder) snapshot() []*stream.Txn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*stream.Txn(nil), r.txns...)
}

// dataTxns returns recorded transactions that carry row changes (not only
// heartbeat messages).
func (r *recorder) dataTxns() []*stream.Txn {
	var out []*stream.Txn
	for _, t := range r.snapshot() {
		if len(t.Changes) > 0 {
			out = append(out, t)
		}
	}
	return out
}

// env is one test's database, SQL connection and stream configuration.
type env struct {
	t    *testing.T
	db   string // connection string
	name string
	sql  *pgx.Conn
	cfg  stream.Config
	run  *stream.Stream // set by start
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := pgtest.NewDB(t, cluster)
	e := &env{t: t, db: db, name: pgtest.DBName(t.Name())}
	e.connect()
	t.Cleanup(func() { e.sql.Close(context.Background()) })
	e.cfg = stream.Config{
		ConnString:        db,
		Slot:              e.name,
		Publication:       "pub",
		CreateSlot:        true,
		CreatePublication: "all",
		StatusInterval:    100 * time.Millisecond,
		HeartbeatInterval: -1,
		ReconnectMin:      20 * time.Millisecond,
		ReconnectMax:      500 * time.Millisecond,
		Logger:            testLogger(t),
	}
	return e
}

func testLogger(t *testing.T) zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	}
	return zerolog.New(io.Discard)
}

func (e *env) connect() {
	e.t.Helper()
	conn, err := pgx.Connect(context.Background(), e.db)
	if err != nil {
		e.t.Fatalf("connect: %v", err)
	}
	e.sql = conn
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.sql.Exec(ctx, sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) lsn(sql string, args ...any) ledger.LSN {
	e.t.Helper()
	var s *string
	if err := e.sql.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	if s == nil {
		return 0
	}
	l, err := ledger.ParseLSN(*s)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// confirmed is the slot's confirmed_flush_lsn.
func (e *env) confirmed() ledger.LSN {
	e.t.Helper()
	return e.lsn("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", e.cfg.Slot)
}

func (e *env) walLSN() ledger.LSN {
	e.t.Helper()
	return e.lsn("SELECT pg_current_wal_lsn()::text")
}

// start runs Check then Run in the background; the stream is stopped when
// the test ends (or by calling the returned stop function).
func (e *env) start(h stream.Handler) (stop func() error) {
	e.t.Helper()
	s, err := stream.New(e.cfg, h)
	if err != nil {
		e.t.Fatal(err)
	}
	e.run = s
	ctx, cancel := context.WithCancel(context.Background())
	cctx, ccancel := context.WithTimeout(ctx, time.Minute)
	defer ccancel()
	if _, err := s.Check(cctx); err != nil {
		cancel()
		e.t.Fatalf("check: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(time.Minute):
				runErr = errors.New("Run did not return within a minute of cancel")
			}
		})
		return runErr
	}
	e.t.Cleanup(func() {
		if err := stop(); err != nil {
			e.t.Errorf("run: %v", err)
		}
	})
	return stop
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline. It is a wait for a condition, not a timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
