package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
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

// TestStatusKeyOnlyTables: status lists the tables whose shapes filter on a
// column their deletes do not carry (replica identity not FULL), from
// Postgres with -pg, from the daemon with -url, saying which; from the file
// alone it says to give -pg.
func TestStatusKeyOnlyTables(t *testing.T) {
	c, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	dsn := pgtest.NewDB(t, c)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range []string{
		`CREATE TABLE orders (id int PRIMARY KEY, tenant text, region text)`,
		`CREATE TABLE items (id int PRIMARY KEY, tenant text)`,
		`ALTER TABLE items REPLICA IDENTITY FULL`,
	} {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	clk := clocktest.New(t0)
	path := filepath.Join(t.TempDir(), "ledgerd.db")
	l := must(ledger.Open(ledger.Config{Path: path, Identity: testIdentity, Clock: clk, Logger: zerolog.Nop()}))
	must(l.Register(ledger.ConsumerSpec{ID: "c", TTL: 20 * time.Second}))
	for _, sh := range []ledger.ShapeSpec{
		{ID: "orders-tenant", Table: "public.orders", Filter: map[string][]string{"tenant": {"a"}}},
		{ID: "orders-region", Table: "public.orders", Filter: map[string][]string{"region": {"eu"}, "id": {"1"}}},
		{ID: "orders-id", Table: "public.orders", Filter: map[string][]string{"id": {"1"}}}, // the key: filtered fine
		{ID: "items-tenant", Table: "public.items", Filter: map[string][]string{"tenant": {"a"}}},
	} {
		sh.Consumer = "c"
		_, _, err := l.PutShape(sh)
		check(t, err)
	}
	check(t, l.Sync(ctx))
	const want = "[public.orders default [region tenant] 2]"
	listed := func(sr StatusReport) string {
		var out []string
		for _, k := range sr.KeyOnlyTables {
			out = append(out, fmt.Sprintf("%s %s %v %d", k.Table, k.ReplicaIdentity, k.Columns, k.Shapes))
		}
		return fmt.Sprint(out)
	}
	status := func(args ...string) (StatusReport, string) {
		t.Helper()
		r := runInspect(t, nil, append(args, "-json", "status")...)
		if r.code != exitOK {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
		}
		var sr StatusReport
		check(t, json.Unmarshal([]byte(r.stdout), &sr))
		return sr, runInspect(t, nil, append(args, "status")...).stdout
	}

	// The daemon answers from its own Postgres connection.
	pg, err := api.NewPG(ctx, dsn, "ledgerd", "ledgerd")
	check(t, err)
	defer pg.Close()
	hub := deliver.New(deliver.Config{Ledger: l, KeepaliveInterval: time.Hour})
	defer hub.Close()
	srv := httptest.NewServer(api.New(api.Config{Ledger: l, Hub: hub, SlotName: "ledgerd", Identity: pg, Clock: clk,
		Logger: zerolog.Nop()}).Handler())
	defer srv.Close()
	sr, text := status("-url", srv.URL)
	if listed(sr) != want || sr.KeyOnlyFrom != fromDaemon {
		t.Errorf("-url: key-only tables %s from %q, want %s from the daemon", listed(sr), sr.KeyOnlyFrom, want)
	}
	if !strings.Contains(text, "public.orders") || !strings.Contains(text, "(daemon)") || !strings.Contains(text, "REPLICA IDENTITY FULL") {
		t.Errorf("-url status text does not list public.orders from the daemon with the fix:\n%s", text)
	}
	srv.Close()
	check(t, l.Close())

	sr, text = status("-db", path, "-pg", dsn)
	if listed(sr) != want || sr.KeyOnlyFrom != fromPG {
		t.Errorf("-pg: key-only tables %s from %q, want %s from postgres", listed(sr), sr.KeyOnlyFrom, want)
	}
	if !strings.Contains(text, "public.orders  default") || !strings.Contains(text, "key-only deletes") {
		t.Errorf("-pg status text does not list public.orders:\n%s", text)
	}

	if _, err := conn.Exec(ctx, `ALTER TABLE orders REPLICA IDENTITY FULL`); err != nil {
		t.Fatal(err)
	}
	sr, text = status("-db", path, "-pg", dsn)
	if sr.KeyOnlyTables == nil || len(sr.KeyOnlyTables) != 0 || sr.KeyOnlyFrom != fromPG || !strings.Contains(text, "key-only deletes    none") {
		t.Errorf("after REPLICA IDENTITY FULL: %s from %q, want none from postgres; text:\n%s", listed(sr), sr.KeyOnlyFrom, text)
	}

	sr, _ = status("-db", path)
	if sr.KeyOnlyFrom != "" || !strings.Contains(strings.Join(sr.Notes, "\n"), "give -pg") {
		t.Errorf("file only: from %q, notes %q; want unknown and a note naming -pg", sr.KeyOnlyFrom, sr.Notes)
	}
}
