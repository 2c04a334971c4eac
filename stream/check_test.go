package stream_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/stream"
)

func check(t *testing.T, cfg stream.Config) (stream.System, error) {
	t.Helper()
	s, err := stream.New(cfg, newRecorder(true))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return s.Check(ctx)
}

// wantCheckError asserts err is a *CheckError for sentinel, with a fix
// mentioning hint, terminal as stated.
func wantCheckError(t *testing.T, err, sentinel error, hint string, terminal bool) {
	t.Helper()
	var ce *stream.CheckError
	if !errors.Is(err, sentinel) || !errors.As(err, &ce) {
		t.Fatalf("error %v, want %v", err, sentinel)
	}
	if !strings.Contains(ce.Fix, hint) {
		t.Errorf("fix %q does not mention %q", ce.Fix, hint)
	}
	if stream.IsTerminal(err) != terminal {
		t.Errorf("IsTerminal = %v, want %v", !terminal, terminal)
	}
}

func TestCheckWALLevel(t *testing.T) {
	c, err := pgtest.Start(pgtest.Options{Settings: map[string]string{"wal_level": "replica"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = check(t, stream.Config{ConnString: c.ConnString("postgres"), Slot: "s", Publication: "p",
		CreateSlot: true, CreatePublication: "all"})
	wantCheckError(t, err, stream.ErrWALLevel, "wal_level = logical", true)
}

func TestCheckSlotMissing(t *testing.T) {
	e := newEnv(t)
	e.cfg.CreateSlot = false
	_, err := check(t, e.cfg)
	wantCheckError(t, err, stream.ErrSlotMissing, "-create-slot", true)

	// Run gives up on a terminal error instead of retrying.
	s, _ := stream.New(e.cfg, newRecorder(true))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, stream.ErrSlotMissing) {
		t.Errorf("Run: %v, want ErrSlotMissing", err)
	}

	e.cfg.CreateSlot = true
	sys, err := check(t, e.cfg)
	if err != nil {
		t.Fatalf("with CreateSlot: %v", err)
	}
	if sys.SystemID == "" || sys.Timeline < 1 || sys.Database != e.name || sys.XLogPos == 0 {
		t.Errorf("system %+v", sys)
	}
	if e.confirmed() == 0 {
		t.Error("slot not created")
	}
}

func TestCheckPublicationMissing(t *testing.T) {
	e := newEnv(t)
	e.cfg.CreatePublication = ""
	_, err := check(t, e.cfg)
	wantCheckError(t, err, stream.ErrPublicationMissing, "-create-publication", true)
	e.exec(`CREATE TABLE a (id int)`)
	e.exec(`CREATE TABLE "B" (id int)`)
	e.cfg.CreatePublication = `public.a, public.B`
	if _, err := check(t, e.cfg); err != nil {
		t.Fatalf("with CreatePublication: %v", err)
	}
	var n int
	if err := e.sql.QueryRow(context.Background(), "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pub'").Scan(&n); err != nil || n != 2 {
		t.Errorf("publication has %d tables (%v), want 2", n, err)
	}
}

func TestCheckSlotActiveElsewhere(t *testing.T) {
	e := newEnv(t)
	e.start(newRecorder(true))
	waitFor(t, "the slot to be active", func() bool {
		var active bool
		return e.sql.QueryRow(context.Background(), "SELECT active FROM pg_replication_slots WHERE slot_name = $1", e.cfg.Slot).Scan(&active) == nil && active
	})
	_, err := check(t, e.cfg)
	wantCheckError(t, err, stream.ErrSlotActive, "pg_terminate_backend", false)
}

func TestCheckPrivileges(t *testing.T) {
	e := newEnv(t)
	role := e.name + "_norepl"
	e.exec(`CREATE ROLE ` + role + ` LOGIN`)
	t.Cleanup(func() { _ = cluster.Exec(context.Background(), "postgres", "DROP ROLE IF EXISTS "+role) })
	e.cfg.ConnString = strings.Replace(e.db, "postgres@", role+"@", 1)
	_, err := check(t, e.cfg)
	wantCheckError(t, err, stream.ErrPrivilege, "REPLICATION", true)
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	for _, cfg := range []stream.Config{{Slot: "s", Publication: "p"}, {ConnString: "x", Publication: "p"}, {ConnString: "x", Slot: "s"}} {
		if _, err := stream.New(cfg, newRecorder(true)); !errors.Is(err, stream.ErrConfig) {
			t.Errorf("New(%+v): %v, want ErrConfig", cfg, err)
		}
	}
}

// TestCheckSlotInvalidated: a slot that lost its WAL (max_slot_wal_keep_size
// exceeded) is reported as invalidated, terminal.
func TestCheckSlotInvalidated(t *testing.T) {
	c, err := pgtest.Start(pgtest.Options{Settings: map[string]string{"max_slot_wal_keep_size": "1MB", "wal_keep_size": "0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	cfg := stream.Config{ConnString: c.ConnString("postgres"), Slot: "lost", Publication: "p", CreatePublication: "all"}
	for _, sql := range []string{
		`SELECT pg_create_logical_replication_slot('lost', 'pgoutput')`,
		`CREATE TABLE fill (v text)`,
	} {
		if err := c.Exec(ctx, "postgres", sql); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the slot to be invalidated", func() bool {
		for _, sql := range []string{`INSERT INTO fill SELECT repeat('x', 1000) FROM generate_series(1, 2000)`, `SELECT pg_switch_wal()`, `CHECKPOINT`} {
			if err := c.Exec(ctx, "postgres", sql); err != nil {
				t.Fatal(err)
			}
		}
		_, err := check(t, cfg)
		return errors.Is(err, stream.ErrSlotInvalidated)
	})
	_, err = check(t, cfg)
	wantCheckError(t, err, stream.ErrSlotInvalidated, "pg_drop_replication_slot", true)
}
