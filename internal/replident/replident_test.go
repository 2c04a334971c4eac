package replident_test

import (
	"context"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/internal/replident"
	"github.com/ledgerd/ledgerd/ledger"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m, pgtest.Options{}, &cluster)) }

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := conn.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// TestReadAndMissing: each replica identity is read with the columns a
// key-only old row carries, and Missing names the filter columns it lacks.
func TestReadAndMissing(t *testing.T) {
	conn := connect(t, pgtest.NewDB(t, cluster))
	exec(t, conn,
		`CREATE TABLE dflt (id int, region text, tenant text, PRIMARY KEY (region, id))`,
		`CREATE TABLE idx (id int PRIMARY KEY, code text NOT NULL, tenant text)`,
		`CREATE UNIQUE INDEX idx_code ON idx (code)`,
		`ALTER TABLE idx REPLICA IDENTITY USING INDEX idx_code`,
		`CREATE TABLE fullr (id int PRIMARY KEY, tenant text)`,
		`ALTER TABLE fullr REPLICA IDENTITY FULL`,
		`CREATE TABLE nothing (id int PRIMARY KEY, tenant text)`,
		`ALTER TABLE nothing REPLICA IDENTITY NOTHING`,
		`CREATE TABLE nokey (tenant text)`,
		`CREATE SCHEMA "Odd"`,
		`CREATE TABLE "Odd"."ta.ble" (id int PRIMARY KEY, tenant text)`,
	)
	ids, err := replident.Read(context.Background(), conn, []string{"public.dflt", "public.idx", "public.fullr",
		"public.nothing", "public.nokey", "Odd.ta.ble", "public.missing"})
	if err != nil {
		t.Fatal(err)
	}
	filter := map[string][]string{"tenant": {"b"}, "region": {"eu"}, "code": {"k"}}
	for _, c := range []struct {
		table, mode  string
		key, missing []string
	}{
		{"public.dflt", replident.ModeDefault, []string{"id", "region"}, []string{"code", "tenant"}},
		{"public.idx", replident.ModeIndex, []string{"code"}, []string{"region", "tenant"}},
		{"public.fullr", replident.ModeFull, []string{}, nil},
		{"public.nothing", replident.ModeNothing, []string{}, []string{"code", "region", "tenant"}},
		{"public.nokey", replident.ModeDefault, []string{}, []string{"code", "region", "tenant"}},
		{"Odd.ta.ble", replident.ModeDefault, []string{"id"}, []string{"code", "region", "tenant"}},
	} {
		id, ok := ids[c.table]
		if !ok {
			t.Errorf("%s: not read", c.table)
			continue
		}
		if id.Mode != c.mode || !slices.Equal(id.Key, c.key) {
			t.Errorf("%s: %+v, want mode %s key %v", c.table, id, c.mode, c.key)
		}
		if got := id.Missing(filter); !slices.Equal(got, c.missing) {
			t.Errorf("%s: missing %v, want %v", c.table, got, c.missing)
		}
	}
	if _, ok := ids["public.missing"]; ok || len(ids) != 6 {
		t.Errorf("read %d tables (%v), want the 6 that exist", len(ids), ids)
	}
}

// TestSetFull: SetFull quotes the table's name, and a role that does not
// own the table gets Postgres' refusal as an error (the daemon then falls
// back to warning); so does a lock it cannot get within the timeout.
func TestSetFull(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	conn := connect(t, dsn)
	exec(t, conn,
		`CREATE SCHEMA "Odd"`,
		`CREATE TABLE "Odd"."ta.ble" (id int PRIMARY KEY, tenant text)`,
		`CREATE TABLE plain (id int PRIMARY KEY, tenant text)`,
		`DROP ROLE IF EXISTS replident_limited`,
		`CREATE ROLE replident_limited LOGIN`,
		`GRANT USAGE ON SCHEMA "Odd" TO replident_limited`,
	)
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), `DROP OWNED BY replident_limited`)
		_, _ = conn.Exec(context.Background(), `DROP ROLE replident_limited`)
	})
	ctx := context.Background()
	if err := replident.SetFull(ctx, conn, "Odd.ta.ble", 0); err != nil {
		t.Fatal(err)
	}
	ids, err := replident.Read(ctx, conn, []string{"Odd.ta.ble"})
	if err != nil || ids["Odd.ta.ble"].Mode != replident.ModeFull {
		t.Fatalf("after SetFull: %+v %v", ids, err)
	}

	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("replident_limited")
	limited := connect(t, u.String())
	err = replident.SetFull(ctx, limited, "public.plain", 0)
	if err == nil || !strings.Contains(err.Error(), "must be owner") {
		t.Errorf("SetFull as a non-owner: %v, want Postgres' must-be-owner refusal", err)
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE plain IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	other := connect(t, dsn)
	err = replident.SetFull(ctx, other, "public.plain", 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "lock timeout") {
		t.Errorf("SetFull behind a lock: %v, want a lock timeout", err)
	}
}

// TestGaps groups the shapes filtering on columns outside a table's key.
func TestGaps(t *testing.T) {
	ids := map[string]replident.Identity{
		"public.orders": {Table: "public.orders", Mode: replident.ModeDefault, Key: []string{"id"}},
		"public.items":  {Table: "public.items", Mode: replident.ModeFull},
		"public.keyed":  {Table: "public.keyed", Mode: replident.ModeIndex, Key: []string{"code"}},
	}
	shape := func(table string, filter map[string][]string) ledger.Shape {
		return ledger.Shape{ShapeSpec: ledger.ShapeSpec{Table: table, Filter: filter}}
	}
	shapes := []ledger.Shape{
		shape("public.orders", map[string][]string{"tenant": {"a"}}),
		shape("public.orders", map[string][]string{"region": {"eu"}, "id": {"1"}}),
		shape("public.orders", map[string][]string{"id": {"2"}}), // filtered on the key: no gap
		shape("public.orders", nil),
		shape("public.items", map[string][]string{"tenant": {"a"}}), // full: no gap
		shape("public.keyed", map[string][]string{"code": {"k"}}),
		shape("public.dropped", map[string][]string{"tenant": {"a"}}),
	}
	if got, want := replident.FilteredTables(shapes), []string{"public.dropped", "public.items", "public.keyed", "public.orders"}; !slices.Equal(got, want) {
		t.Errorf("filtered tables %v, want %v", got, want)
	}
	got := replident.Gaps(ids, shapes)
	if len(got) != 1 || got[0].Table != "public.orders" || got[0].Mode != replident.ModeDefault || got[0].Shapes != 2 ||
		!slices.Equal(got[0].Columns, []string{"region", "tenant"}) {
		t.Errorf("gaps %+v, want public.orders (default) with 2 shapes on region, tenant", got)
	}
}
