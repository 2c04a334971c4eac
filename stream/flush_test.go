package stream_test

import (
	"context"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// lastReply is when the slot's walsender last got a status update.
func (e *env) lastReply() time.Time {
	e.t.Helper()
	var ts *time.Time
	err := e.sql.QueryRow(context.Background(), `SELECT r.reply_time FROM pg_stat_replication r
		JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1`, e.cfg.Slot).Scan(&ts)
	if err != nil || ts == nil {
		return time.Time{}
	}
	return *ts
}

// TestFlushNeverPassesHandler: the slot's confirmed_flush_lsn never passes
// what the handler says is safe, however much has been received (I1); once
// the handler has nothing pending, it reaches the WAL end through Idle (I3).
func TestFlushNeverPassesHandler(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	h := newRecorder(false) // FlushLSN stays 0 until the test hands one in
	e.start(h)
	initial := e.confirmed()

	// bound fails the test if the slot is past both its start and the
	// handed-in position; it is checked at every poll below.
	var handed ledger.LSN
	bound := func() {
		t.Helper()
		if c := e.confirmed(); c > max(initial, handed) {
			t.Fatalf("confirmed_flush_lsn %s passed the handler's flush LSN %s", c, handed)
		}
	}
	for i := range 20 {
		e.exec(`INSERT INTO t VALUES ($1)`, i)
		bound()
	}
	waitFor(t, "20 transactions", func() bool { bound(); return len(h.dataTxns()) == 20 })

	handed = h.dataTxns()[9].CommitLSN
	h.setFlush(handed)
	waitFor(t, "the handed LSN to be confirmed", func() bool { bound(); return e.confirmed() == handed })
	for i := 20; i < 40; i++ {
		e.exec(`INSERT INTO t VALUES ($1)`, i)
		bound()
	}
	// Wait for status updates sent after all 40 were received, then check
	// the slot did not follow what was received.
	waitFor(t, "40 transactions", func() bool { bound(); return len(h.dataTxns()) == 40 })
	received := time.Now()
	waitFor(t, "a status update after receiving", func() bool { bound(); return e.lastReply().After(received) })
	if c := e.confirmed(); c != handed {
		t.Fatalf("confirmed_flush_lsn %s, want the handed %s", c, handed)
	}

	// Nothing pending: Idle(walEnd) lets the slot reach the WAL end.
	h.setAuto()
	end := e.walLSN()
	waitFor(t, "the slot to reach the WAL end", func() bool { return e.confirmed() >= end })
}

// TestIdleDatabaseHeartbeat: a database with no traffic of its own advances
// its slot while another database on the cluster writes, through the
// heartbeat's logical messages. The handler here ignores Idle, so only
// transactions can move the slot.
func TestIdleDatabaseHeartbeat(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	e.cfg.HeartbeatInterval = 100 * time.Millisecond
	h := newRecorder(true)
	h.ignoreIdle = true

	busyName := e.name + "_busy"
	ctx := context.Background()
	if err := cluster.CreateDatabase(ctx, busyName); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.DropDatabase(context.Background(), busyName) })
	busy := &env{t: t, db: cluster.ConnString(busyName)}
	busy.connect()
	defer busy.sql.Close(ctx)
	busy.exec(`CREATE TABLE load (id int PRIMARY KEY, v text)`)

	e.start(h)
	for i := range 200 {
		busy.exec(`INSERT INTO load VALUES ($1, repeat('x', 1000))`, i)
	}
	end := busy.walLSN()
	waitFor(t, "the idle database's slot to pass the busy database's writes", func() bool { return e.confirmed() >= end })

	beats := 0
	for _, txn := range h.snapshot() {
		if len(txn.Changes) != 0 {
			t.Errorf("idle database delivered changes: %+v", txn.Changes)
		}
		for _, m := range txn.Messages {
			if m.Prefix == stream.HeartbeatPrefix {
				beats++
			}
		}
	}
	if beats == 0 {
		t.Error("no heartbeat message received")
	}
}

// blocker is a Handler whose HandleTxn blocks until released.
type blocker struct {
	*recorder
	entered chan struct{}
	release chan struct{}
}

func (b *blocker) HandleTxn(ctx context.Context, txn *stream.Txn) error {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.recorder.HandleTxn(ctx, txn)
}

// TestBlockedHandlerKeepsSession: while HandleTxn blocks (backpressure)
// for longer than wal_sender_timeout, status updates keep the walsender from
// timing the session out; the same walsender streams on once released.
func TestBlockedHandlerKeepsSession(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	e.cfg.ConnString += "&options=-c%20wal_sender_timeout%3D2s"
	b := &blocker{recorder: newRecorder(true), entered: make(chan struct{}, 1), release: make(chan struct{})}
	e.start(b)
	var pid int32
	waitFor(t, "the slot to be active", func() bool {
		return e.sql.QueryRow(context.Background(),
			"SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1", e.cfg.Slot).Scan(&pid) == nil && pid != 0
	})
	e.exec(`INSERT INTO t VALUES (1)`)
	<-b.entered
	blocked := time.Now()
	// Blocked for two timeouts, with the server still hearing from us.
	waitFor(t, "status updates while blocked", func() bool { return e.lastReply().After(blocked.Add(4 * time.Second)) })
	close(b.release)
	e.exec(`INSERT INTO t VALUES (2)`)
	waitFor(t, "both transactions", func() bool { return len(b.dataTxns()) == 2 })
	var now int32
	if err := e.sql.QueryRow(context.Background(),
		"SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1", e.cfg.Slot).Scan(&now); err != nil {
		t.Fatal(err)
	}
	if now != pid {
		t.Errorf("walsender changed from pid %d to %d: the session timed out while the handler blocked", pid, now)
	}
}
