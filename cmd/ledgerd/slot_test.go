package main_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	bolt "go.etcd.io/bbolt"

	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// startMustFail runs ledgerd like startDaemon (without -create-slot unless
// extra gives it) and expects it to exit with an error instead of starting;
// it returns what the daemon wrote.
func startMustFail(t *testing.T, dsn, slot, dbPath string, extra ...string) string {
	t.Helper()
	args := append([]string{"-slot", slot, "-publication", slot, "-create-publication", "all", "-db", dbPath,
		"-listen", freeAddr(t), "-status-interval", "200ms", "-heartbeat-interval", "0", "-log-level", "debug"}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "LEDGERD_PG_URL="+dsn)
	out := &lockedWriter{b: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	text := func() string {
		out.mu.Lock()
		defer out.mu.Unlock()
		return out.b.String()
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("ledgerd %v exited 0, want a refusal:\n%s", extra, text())
		}
		return text()
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("ledgerd %v is still running after 30s, want a refusal:\n%s", extra, text())
		return ""
	}
}

// slotExists reports whether the slot is in pg_replication_slots.
func slotExists(t *testing.T, dsn, slot string) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func wantInOutput(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("ledgerd's output does not say %q:\n%s", w, out)
		}
	}
}

func hasEvent(t *testing.T, dbPath, kind string) bool {
	t.Helper()
	st, err := ledger.Load(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range st.Events {
		if e.Kind == kind {
			return true
		}
	}
	return false
}

// TestNewLedgerOnExistingSlotRefused: a new ledger file against a slot that
// already exists (the file was lost or moved away) is refused, naming
// -adopt-slot, and leaves the slot where it was (I1); with -adopt-slot it
// starts, and the adoption is in the journal.
func TestNewLedgerOnExistingSlotRefused(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	// The publication exists before the slot, as it does for a ledger file
	// that was lost: pgoutput looks a publication up as of the WAL it
	// decodes, so one created later fails on the insert below.
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION "+slot+" FOR ALL TABLES",
		"SELECT pg_create_logical_replication_slot('"+slot+"', 'pgoutput')", "INSERT INTO t VALUES (1)")
	before := confirmedFlush(t, dsn, slot)
	dbPath := filepath.Join(t.TempDir(), "ledgerd.db")

	out := startMustFail(t, dsn, slot, dbPath, "-create-slot")
	wantInOutput(t, out, "-adopt-slot", "already exists", "resynchronise")
	if got := confirmedFlush(t, dsn, slot); got != before {
		t.Errorf("a refused start moved the slot from %s to %s", before, got)
	}

	d := startDaemon(t, dsn, slot, dbPath, "-adopt-slot")
	for _, want := range []string{"adopted a slot", "created a new ledger file"} {
		if !strings.Contains(d.logText(), want) {
			t.Errorf("ledgerd did not log %q", want)
		}
	}
	d.stop()
	if !hasEvent(t, dbPath, ledger.EventSlotAdopted) {
		t.Errorf("no %s event in the journal", ledger.EventSlotAdopted)
	}
	// Bound now: the next start needs no flag.
	startDaemon(t, dsn, slot, dbPath).stop()
}

// TestLedgerOlderThanSlotRefused: a ledger file restored from a backup older
// than the slot (the slot confirmed past the file's last reported flush) is
// refused: what happened in between is not in it (I1, I4).
func TestLedgerOlderThanSlotRefused(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY)")
	dbPath := filepath.Join(t.TempDir(), "ledgerd.db")
	startDaemon(t, dsn, slot, dbPath).stop()
	backup, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ledger.Load(dbPath)
	if err != nil {
		t.Fatal(err)
	}

	d := startDaemon(t, dsn, slot, dbPath)
	sql(t, dsn, "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)")
	waitFor(t, "the slot to move past the backup", 30*time.Second, func() bool {
		return confirmedFlush(t, dsn, slot) > st.Meta.LastFlush
	})
	d.stop()
	confirmed := confirmedFlush(t, dsn, slot)

	if err := os.WriteFile(dbPath, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	out := startMustFail(t, dsn, slot, dbPath, "-create-slot")
	wantInOutput(t, out, "-adopt-slot", st.Meta.LastFlush.String(), confirmed.String(), "backup")
	if got := confirmedFlush(t, dsn, slot); got != confirmed {
		t.Errorf("a refused start moved the slot from %s to %s", confirmed, got)
	}
}

// TestCreateSlotNeedsTheLedgerFirst: with -create-slot, a ledger file that
// cannot be opened (held by another process, a bad path, a 0-byte file)
// fails the start before any slot exists: a slot left behind by a failed
// start would pin WAL for ever (I3).
func TestCreateSlotNeedsTheLedgerFirst(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY)")
	dir := t.TempDir()

	locked := filepath.Join(dir, "locked.db")
	db, err := bolt.Open(locked, 0o600, nil) // holds the file's lock, as a running ledgerd would
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		name, path string
		wants      []string
	}{
		{"locked", locked, []string{"another process"}},
		{"bad path", filepath.Join(notDir, "ledgerd.db"), []string{"not a directory"}},
		{"empty file", empty, []string{"0 bytes", "-adopt-slot"}},
	} {
		slot := fmt.Sprintf("%s_%d", slotName(t), i)
		out := startMustFail(t, dsn, slot, c.path, "-create-slot")
		wantInOutput(t, out, c.wants...)
		if slotExists(t, dsn, slot) {
			t.Errorf("%s: a start that failed left slot %s behind", c.name, slot)
		}
	}
	if fi, err := os.Stat(empty); err != nil || fi.Size() != 0 {
		t.Errorf("the refused 0-byte file changed: %v %v", fi, err)
	}
}

// refusingProxy forwards the first connection to Postgres and answers every
// later one as a server refusing it (SQLSTATE 28000, as pg_hba.conf does).
type refusingProxy struct {
	ln   net.Listener
	addr string
	wg   sync.WaitGroup
}

func startRefusingProxy(t *testing.T, target string) *refusingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &refusingProxy{ln: ln, addr: ln.Addr().String()}
	p.wg.Go(func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if n == 0 {
				p.wg.Go(func() { forward(c, target) })
			} else {
				p.wg.Go(func() { refuse(c) })
			}
		}
	})
	t.Cleanup(func() { _ = ln.Close(); p.wg.Wait() })
	return p
}

func forward(c net.Conn, target string) {
	defer c.Close()
	s, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer s.Close()
	go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
	_, _ = io.Copy(c, s)
}

func refuse(c net.Conn) {
	defer c.Close()
	be := pgproto3.NewBackend(c, c)
	for {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := c.Write([]byte("N")); err != nil {
				return
			}
			continue
		}
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28000", Message: "no pg_hba.conf entry (refused by the test proxy)"})
		_ = be.Flush()
		return
	}
}

// TestFailedStartDropsTheSlotItCreated: a start that created the slot and
// then fails before streaming (here Postgres refuses the stream's own
// connection) drops the slot again instead of leaving it to pin WAL (I3).
func TestFailedStartDropsTheSlotItCreated(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY)")
	p := startRefusingProxy(t, fmt.Sprintf("127.0.0.1:%d", cluster.Port()))
	proxied := strings.Replace(dsn, fmt.Sprintf("127.0.0.1:%d", cluster.Port()), p.addr, 1)

	out := startMustFail(t, proxied, slot, filepath.Join(t.TempDir(), "ledgerd.db"), "-create-slot")
	wantInOutput(t, out, "created replication slot", "28000")
	if slotExists(t, dsn, slot) {
		t.Fatalf("the failed start left slot %s behind:\n%s", slot, out)
	}
	wantInOutput(t, out, "dropped the replication slot created by this failed start")
}

// TestSlotAuditFindsSlotPastLedger: while ledgerd runs, another client moves
// the slot past what ledgerd reported (the same condition a start refuses).
// The slot audit counts it and journals it.
func TestSlotAuditFindsSlotPastLedger(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY)")
	d := startDaemon(t, dsn, slot, "", "-reconcile-interval", "100ms")
	ctx := context.Background()
	k := registerShape(t, d, "c", time.Minute, "s", "public.t", nil)
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sql(t, dsn, "INSERT INTO t VALUES (1)")
	for got := false; !got; {
		_, txn, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		got = txn != nil
	}
	// Never acked: ledgerd's flush stays before the row. Another client
	// moves the slot past it while ledgerd reconnects.
	const metric = `ledgerd_slot_audit_anomalies_total{anomaly="confirmed_flush_past_ledger"}`
	if got := scrape(t, d)[metric]; got != 0 {
		t.Fatalf("%s = %v before anything happened", metric, got)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	waitFor(t, "another client to move the slot", 30*time.Second, func() bool {
		_, _ = conn.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active", slot)
		_, err := conn.Exec(ctx, "SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())", slot)
		return err == nil
	})
	waitFor(t, "the audit to report the slot past the ledger", 30*time.Second, func() bool { return scrape(t, d)[metric] >= 1 })
	d.stop()
	if !hasEvent(t, d.dbPath, "slot_anomaly") {
		t.Error("no slot_anomaly event in the journal")
	}
}
