package stream_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// writer commits single-row inserts into rows(id) until stopped, reconnecting
// through failures, and remembers which ids were acknowledged as committed.
type writer struct {
	mu        sync.Mutex
	committed []int
	stop      chan struct{}
	done      chan struct{}
}

func startWriter(t *testing.T, connString string) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		ctx := context.Background()
		var conn *pgx.Conn
		for id := 1; ; id++ {
			select {
			case <-w.stop:
				if conn != nil {
					conn.Close(ctx)
				}
				return
			default:
			}
			if conn == nil {
				c, err := pgx.Connect(ctx, connString)
				if err != nil {
					time.Sleep(20 * time.Millisecond) // server restarting
					continue
				}
				conn = c
			}
			if _, err := conn.Exec(ctx, "INSERT INTO rows VALUES ($1)", id); err != nil {
				conn.Close(ctx)
				conn = nil
				continue // outcome unknown: not counted as committed
			}
			w.mu.Lock()
			w.committed = append(w.committed, id)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.halt)
	return w
}

func (w *writer) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.committed)
}

// observed returns the ids the handler has seen inserted into rows.
func observed(h *recorder) map[string]bool {
	ids := map[string]bool{}
	for _, txn := range h.snapshot() {
		for _, c := range txn.Changes {
			if c.Table == "public.rows" {
				ids[c.New[0].Value] = true
			}
		}
	}
	return ids
}

// TestResumeAfterTerminateAndCrash kills the walsender twice and crashes
// Postgres while rows are being committed; every committed row must be
// observed afterwards, and no transaction handed twice.
func TestResumeAfterTerminateAndCrash(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE rows (id int PRIMARY KEY)`)
	h := newRecorder(true)
	e.start(h)
	w := startWriter(t, e.db)

	progress := func(what string) {
		t.Helper()
		target := w.count() + 100
		waitFor(t, what, func() bool { return w.count() >= target && len(observed(h)) >= target-50 })
	}
	progress("streaming to start")
	for range 2 {
		var pid int32
		waitFor(t, "the slot to be active", func() bool {
			return e.sql.QueryRow(context.Background(),
				"SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1", e.cfg.Slot).Scan(&pid) == nil && pid != 0
		})
		e.exec("SELECT pg_terminate_backend($1)", pid)
		progress("streaming after pg_terminate_backend")
	}

	if err := cluster.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	e.sql.Close(context.Background())
	e.connect()
	progress("streaming after a crash of Postgres")
	w.halt()

	n := w.count()
	waitFor(t, "every committed row", func() bool {
		seen := observed(h)
		for _, id := range w.committed[:n] {
			if !seen[itoa(id)] {
				return false
			}
		}
		return true
	})
	if h.duplicates() != 0 {
		t.Errorf("%d transactions handed twice", h.duplicates())
	}
	st := e.run.Stats()
	if st.Sessions < 4 || !st.Streaming || st.Confirmed == 0 || st.LastCommit == 0 {
		t.Errorf("stats %+v: want 4 sessions (start, 2 terminations, crash), streaming, positions", st)
	}
	t.Logf("%d committed rows all observed, stats %+v", n, st)
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestNewStreamResumesAtHandlerFlush: a new Stream (a restarted daemon)
// receives again exactly the transactions from the one whose commit LSN the
// previous handler reported as its flush LSN: everything strictly before it
// was flushed, it and everything after were not (I1).
func TestNewStreamResumesAtHandlerFlush(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE rows (id int PRIMARY KEY)`)
	first := newRecorder(false)
	stop := e.start(first)
	for i := range 20 {
		e.exec(`INSERT INTO rows VALUES ($1)`, i)
	}
	waitFor(t, "20 transactions", func() bool { return len(first.dataTxns()) == 20 })
	txns := first.dataTxns()
	first.setFlush(txns[9].CommitLSN)
	waitFor(t, "the flush LSN to be confirmed", func() bool { return e.confirmed() == txns[9].CommitLSN })
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	second := newRecorder(true)
	e.cfg.CreateSlot, e.cfg.CreatePublication = false, ""
	e.start(second)
	e.exec(`INSERT INTO rows VALUES (20)`)
	waitFor(t, "the new transaction", func() bool { return observed(second)["20"] })
	got := second.dataTxns()
	if len(got) != 12 {
		t.Fatalf("%d transactions after restart, want the 11 from the flushed commit LSN on, plus 1 new", len(got))
	}
	for i, txn := range got[:11] {
		if txn.CommitLSN != txns[9+i].CommitLSN {
			t.Errorf("redelivered %d: commit %s, want %s", i, txn.CommitLSN, txns[9+i].CommitLSN)
		}
	}
}
