package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/internal/clocktest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestURL runs inspect -url against the daemon's real API over a real
// ledger: the snapshot path and the live pending state the file lacks.
func TestURL(t *testing.T) {
	clk := clocktest.New(t0)
	path := filepath.Join(t.TempDir(), "ledgerd.db")
	l := must(ledger.Open(ledger.Config{Path: path, Identity: testIdentity, Clock: clk, Logger: zerolog.Nop()}))
	defer l.Close()
	hub := deliver.New(deliver.Config{Ledger: l, KeepaliveInterval: time.Hour})
	defer hub.Close()
	srv := httptest.NewServer(api.New(api.Config{Ledger: l, Hub: hub, SlotName: "ledgerd", Token: "s3cret", Clock: clk,
		Logger: zerolog.Nop()}).Handler())
	defer srv.Close()

	must(l.Register(ledger.ConsumerSpec{ID: "c1", TTL: 20 * time.Second}))
	must(l.Register(ledger.ConsumerSpec{ID: "c2", TTL: 20 * time.Second}))
	_, _, err := l.PutShape(ledger.ShapeSpec{ID: "slow", Consumer: "c1", Table: "public.t"})
	check(t, err)
	_, _, err = l.PutShape(ledger.ShapeSpec{ID: "fast", Consumer: "c2", Table: "public.t"})
	check(t, err)
	clk.Advance(5 * time.Second)
	l.Track(0x3000, 0x3050, []string{"slow", "fast"})
	check(t, l.Ack("fast", 0x3000))
	check(t, l.Sync(context.Background()))
	env := map[string]string{"LEDGERD_TOKEN": "s3cret"}

	r := runInspect(t, env, "-url", srv.URL, "-json", "holders")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var hr HoldersReport
	check(t, json.Unmarshal([]byte(r.stdout), &hr))
	if !hr.Certain || len(hr.Holders) != 1 {
		t.Fatalf("want one certain holder from the daemon, got %+v", hr)
	}
	h := hr.Holders[0]
	if h.Shape != "slow" || h.PendingLSN != "0/3000" || h.Source != fromDaemon || h.PinnedBytes != nil {
		t.Errorf("holder = %+v, want slow pending at 0/3000 from the daemon, bytes unknown (no Postgres)", h)
	}
	// Lease: registered at t0 with ttl 20s; inspect runs at t0+50s.
	if h.Lease.State != "expired" || h.Next.Reason != string(ledger.ReasonLeaseExpired) {
		t.Errorf("lease %+v next %+v, want expired and a lease_expired eviction", h.Lease, h.Next)
	}

	r = runInspect(t, env, "-url", srv.URL, "why")
	if r.code != exitOK || !strings.Contains(r.stdout, "held by shape slow") || !strings.Contains(r.stdout, "0/3000") {
		t.Errorf("why: exit %d, stdout:\n%s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	r = runInspect(t, env, "-url", srv.URL, "-json", "status")
	var sr StatusReport
	check(t, json.Unmarshal([]byte(r.stdout), &sr))
	if sr.Shapes["pending"] != 1 || sr.SafeFlush.From != fromDaemon || sr.SafeFlush.Value != "0/3000" {
		t.Errorf("status = %+v, want 1 pending shape and the daemon's safe flush 0/3000", sr)
	}
	// Golden text and JSON of the live views (the daemon's address is
	// replaced, it changes with every run).
	for _, args := range [][]string{{"status"}, {"holders"}, {"why"}, {"shape", "slow"}} {
		name := "url_" + strings.Join(args, "_")
		for _, js := range []bool{false, true} {
			a := []string{"-url", srv.URL}
			file := "stdout.txt"
			if js {
				a, file = append(a, "-json"), "stdout.json"
			}
			r := runInspect(t, env, append(a, args...)...)
			if r.code != exitOK {
				t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
			}
			golden(t, name, file, strings.ReplaceAll(r.stdout, srv.URL, "http://127.0.0.1:7070"))
		}
	}
	// A unix socket address works the same.
	sock := filepath.Join(t.TempDir(), "api.sock")
	ul, err := net.Listen("unix", sock)
	check(t, err)
	usrv := &http.Server{Handler: srv.Config.Handler}
	go usrv.Serve(ul)
	defer usrv.Close()
	if r := runInspect(t, env, "-url", "unix:"+sock, "holders"); r.code != exitOK || !strings.Contains(r.stdout, "holder slow") {
		t.Errorf("-url unix:%s: exit %d: %s%s", sock, r.code, r.stdout, r.stderr)
	}
	// The snapshot is read like a file: verify works on it.
	if r := runInspect(t, env, "-url", srv.URL, "verify"); r.code != exitOK {
		t.Errorf("verify through -url: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	// Token from -token-file; a wrong or missing token names the fix.
	tokenFile := filepath.Join(t.TempDir(), "token")
	check(t, os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600))
	if r := runInspect(t, nil, "-url", srv.URL, "-token-file", tokenFile, "evictions"); r.code != exitOK {
		t.Errorf("with -token-file: exit %d: %s", r.code, r.stderr)
	}
	r = runInspect(t, nil, "-url", srv.URL, "status")
	if r.code != exitCannot || !strings.Contains(r.stderr, "LEDGERD_TOKEN") {
		t.Errorf("without a token: exit %d, stderr %s", r.code, r.stderr)
	}
}

// TestPG runs why and verify with -pg against a real Postgres.
func TestPG(t *testing.T) {
	c, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	dsn := pgtest.NewDB(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	lsnOf := func(sql string) ledger.LSN {
		t.Helper()
		var s string
		if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return must(ledger.ParseLSN(s))
	}
	var sysID string
	if err := conn.QueryRow(ctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&sysID); err != nil {
		t.Fatal(err)
	}
	exec(`CREATE TABLE t (id int primary key, v text)`)
	createSlot := func(t *testing.T, name string) ledger.LSN {
		t.Helper()
		l := lsnOf(`SELECT lsn::text FROM pg_create_logical_replication_slot('` + name + `', 'pgoutput')`)
		t.Cleanup(func() { _, _ = conn.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, name) })
		return l
	}
	writeWAL := func() {
		t.Helper()
		exec(`INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g ON CONFLICT (id) DO UPDATE SET v = excluded.v || 'y'`)
	}
	// makeLedger writes a ledger bound to slot; with pin, shape "stuck"
	// never acks the transaction at base+0x10, so the last reported flush
	// stays there while the position moves on.
	makeLedger := func(slot string, base ledger.LSN, pin bool) string {
		t.Helper()
		clk := clocktest.New(t0)
		path := filepath.Join(t.TempDir(), "ledgerd.db")
		id := ledger.Identity{SystemID: sysID, Timeline: 1, Database: pgtest.DBName(t.Name()), Slot: slot}
		l := must(ledger.Open(ledger.Config{Path: path, Identity: id, Clock: clk, Logger: zerolog.Nop()}))
		must(l.Register(ledger.ConsumerSpec{ID: "c", TTL: 30 * time.Second}))
		for _, s := range []string{"stuck", "ok"} {
			_, _, err := l.PutShape(ledger.ShapeSpec{ID: s, Consumer: "c", Table: "public.t"})
			check(t, err)
		}
		l.Track(base+0x10, base+0x20, []string{"stuck", "ok"})
		check(t, l.Ack("ok", base+0x10))
		if !pin {
			check(t, l.Ack("stuck", base+0x10))
		}
		l.Track(base+0x30, base+0x40, []string{"ok"})
		check(t, l.Ack("ok", base+0x30))
		for range 3 {
			check(t, l.Sync(ctx))
			l.FlushLSN()
		}
		check(t, l.Close())
		return path
	}
	why := func(path string) WhyReport {
		t.Helper()
		r := runInspect(t, nil, "-db", path, "-pg", dsn, "-json", "why")
		if r.code != exitOK {
			t.Fatalf("why: exit %d: %s", r.code, r.stderr)
		}
		var w WhyReport
		check(t, json.Unmarshal([]byte(r.stdout), &w))
		return w
	}

	t.Run("shape pin", func(t *testing.T) {
		base := createSlot(t, "pinned")
		writeWAL()
		path := makeLedger("pinned", base, true)
		w := why(path)
		t.Log(w.Paragraph)
		if w.Cause != causeShapePin || w.Shape != "stuck" || w.Slot != "pinned" {
			t.Errorf("why = %+v, want the shape pin of stuck on slot pinned", w)
		}
		if !strings.Contains(w.Paragraph, "pins ") {
			t.Errorf("why does not say how many bytes are pinned: %s", w.Paragraph)
		}
		r := runInspect(t, nil, "-db", path, "-pg", dsn, "-json", "holders")
		var hr HoldersReport
		check(t, json.Unmarshal([]byte(r.stdout), &hr))
		if len(hr.Holders) != 1 || hr.Holders[0].Shape != "stuck" || hr.Holders[0].PinnedBytes == nil || *hr.Holders[0].PinnedBytes <= 0 {
			t.Errorf("holders = %+v, want stuck with bytes measured against the WAL end", hr)
		}
		if r := runInspect(t, nil, "-db", path, "-pg", dsn, "verify"); r.code != exitOK {
			t.Errorf("verify: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
		}
		// Someone else moves the slot past the ledger's flush: a violation.
		exec(`SELECT pg_replication_slot_advance('pinned', pg_current_wal_lsn())`)
		r = runInspect(t, nil, "-db", path, "-pg", dsn, "verify")
		if r.code != exitProblem || !strings.Contains(r.stdout, "pg_confirmed_beyond_ledger") {
			t.Errorf("verify after the slot was advanced elsewhere: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("inactive other slot", func(t *testing.T) {
		createSlot(t, "forgotten")
		writeWAL()
		base := createSlot(t, "ours")
		path := makeLedger("ours", base, false)
		w := why(path)
		t.Log(w.Paragraph)
		if w.Cause != causeOtherSlot || w.Slot != "forgotten" || !strings.Contains(w.Paragraph, "inactive") {
			t.Errorf("why = %+v, want the inactive slot forgotten", w)
		}
		r := runInspect(t, nil, "-db", path, "-pg", dsn, "-json", "status")
		var sr StatusReport
		check(t, json.Unmarshal([]byte(r.stdout), &sr))
		if sr.ConfirmedFlush.From != fromPG || sr.ConfirmedFlush.Value != base.String() {
			t.Errorf("status confirmed flush = %+v, want %s from postgres", sr.ConfirmedFlush, base)
		}
		if len(sr.OtherSlots) != 1 || sr.OtherSlots[0].Name != "forgotten" || sr.OtherSlots[0].Active || sr.OtherSlots[0].RetainedBytes <= 0 {
			t.Errorf("status other slots = %+v, want the inactive slot forgotten with its retained bytes", sr.OtherSlots)
		}
		r = runInspect(t, nil, "-db", path, "-pg", dsn, "status")
		if !strings.Contains(r.stdout, "forgotten") {
			t.Errorf("status text does not list the other slot:\n%s", r.stdout)
		}
		t.Log(r.stdout)
	})

	t.Run("long transaction", func(t *testing.T) {
		base := createSlot(t, "held")
		// A transaction with an xid, left open: decoding must keep its WAL.
		conn2, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn2.Close(context.Background())
		tx, err := conn2.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.Background())
		if _, err := tx.Exec(ctx, `INSERT INTO t VALUES (-1, 'open')`); err != nil {
			t.Fatal(err)
		}
		var pid int
		if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		writeWAL()
		exec(`CHECKPOINT`) // a running-transactions record for the slot to advance over
		writeWAL()
		exec(`SELECT pg_replication_slot_advance('held', pg_current_wal_lsn())`)
		path := makeLedger("held", base, false)
		w := why(path)
		t.Log(w.Paragraph)
		if w.Cause != causeLongXact || w.PID != pid {
			t.Errorf("why = %+v, want the long transaction of pid %d", w, pid)
		}
	})

	t.Run("real daemon", func(t *testing.T) { testRealDaemon(t, c) })

	t.Run("slot missing", func(t *testing.T) {
		path := makeLedger("never_created", lsnOf(`SELECT pg_current_wal_lsn()::text`), false)
		r := runInspect(t, nil, "-db", path, "-pg", dsn, "verify")
		if r.code != exitProblem || !strings.Contains(r.stdout, "pg_slot_missing") {
			t.Errorf("verify: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
}
