package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// rowRecorder records, per shape, each change it received as
// "op old=<old row as JSON>" ("-" when there is none).
type rowRecorder struct {
	mu  sync.Mutex
	got map[string][]string
}

func (r *rowRecorder) handle(_ context.Context, txn *client.Txn) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ch := range txn.Changes {
		old := "-"
		if ch.Old != nil {
			b, _ := json.Marshal(ch.Old) // keys sorted
			old = string(b)
		}
		for _, sh := range ch.Shapes {
			r.got[sh] = append(r.got[sh], ch.Op+" old="+old)
		}
	}
	return nil
}

func (r *rowRecorder) snapshot(shape string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got[shape])
}

// runRows runs consumer k with a rowRecorder until the test ends.
func runRows(t *testing.T, k *client.Consumer) *rowRecorder {
	t.Helper()
	rec := &rowRecorder{got: map[string][]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx, rec.handle, client.RunOptions{}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
	return rec
}

// waitRows waits until every shape has at least its wanted number of
// changes, lets stray deliveries show up, and compares exactly.
func waitRows(t *testing.T, rec *rowRecorder, want map[string][]string) {
	t.Helper()
	for shape, w := range want {
		waitFor(t, fmt.Sprintf("shape %s to receive %d changes", shape, len(w)), 60*time.Second,
			func() bool { return len(rec.snapshot(shape)) >= len(w) })
	}
	time.Sleep(500 * time.Millisecond)
	for _, shape := range sortedKeys(want) {
		if got := rec.snapshot(shape); !slices.Equal(got, want[shape]) {
			t.Errorf("shape %s got\n    %s\nwant\n    %s", shape, strings.Join(got, "\n    "), strings.Join(want[shape], "\n    "))
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestReplicaIdentityMatrix runs insert, update, key-changing update,
// delete and truncate of a tenant-b row under each replica identity
// (DEFAULT, FULL, USING INDEX, NOTHING), against a shape filtered on the
// row's tenant, one filtered on another tenant and an unfiltered one.
//
// Every change matching a shape reaches it (I1). Where the old row carries
// only the key (DEFAULT, USING INDEX), a delete or key-changing update is
// delivered to every filtered shape (over-delivery, counted by
// ledgerd_overdelivered_changes_total) and its "old" holds only the key
// columns, the others left out rather than null. Under FULL deletes are
// filtered. Under NOTHING Postgres refuses the update and the delete. The
// PUT answer warns about each filtered shape on a table not FULL, and the
// status lists those tables.
func TestReplicaIdentityMatrix(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	idents := map[string]string{
		"default": "",
		"full":    "ALTER TABLE t_full REPLICA IDENTITY FULL",
		"index":   "ALTER TABLE t_index REPLICA IDENTITY USING INDEX t_index_code",
		"nothing": "ALTER TABLE t_nothing REPLICA IDENTITY NOTHING",
	}
	for _, ident := range sortedKeys(idents) {
		sql(t, dsn, fmt.Sprintf("CREATE TABLE t_%s (id int PRIMARY KEY, code text NOT NULL, tenant text, note text)", ident),
			fmt.Sprintf("CREATE UNIQUE INDEX t_%s_code ON t_%s (code)", ident, ident))
		if idents[ident] != "" {
			sql(t, dsn, idents[ident])
		}
	}
	d := startDaemon(t, dsn, slot, "")
	ctx := context.Background()
	k, err := d.c.Register(ctx, client.ConsumerConfig{ID: "c", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, ident := range sortedKeys(idents) {
		for _, sh := range []struct {
			suffix string
			filter map[string][]string
		}{{"b", map[string][]string{"tenant": {"b"}}}, {"a", map[string][]string{"tenant": {"a"}}}, {"all", nil}} {
			res, err := k.PutShape(ctx, ident+"-"+sh.suffix, "public.t_"+ident, sh.filter)
			if err != nil {
				t.Fatal(err)
			}
			warned := len(res.Warnings) > 0
			if want := sh.filter != nil && ident != "full"; warned != want {
				t.Errorf("PUT %s-%s warnings %q, want a warning: %v", ident, sh.suffix, res.Warnings, want)
			}
			if warned && (!strings.Contains(res.Warnings[0], "REPLICA IDENTITY FULL") || !strings.Contains(res.Warnings[0], "-replica-identity full") ||
				!strings.Contains(res.Warnings[0], "tenant")) {
				t.Errorf("PUT %s-%s warning %q does not name the column and the fix", ident, sh.suffix, res.Warnings[0])
			}
		}
	}
	rec := runRows(t, k)

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, ident := range sortedKeys(idents) {
		tbl := "t_" + ident
		for _, s := range []string{
			"INSERT INTO " + tbl + " VALUES (1, 'k1', 'b', 'n0')",
			"UPDATE " + tbl + " SET note = 'n1' WHERE id = 1",
			"UPDATE " + tbl + " SET id = 2, code = 'k2' WHERE id = 1",
			"DELETE FROM " + tbl + " WHERE id = 2",
			"TRUNCATE " + tbl,
		} {
			_, err := conn.Exec(ctx, s)
			refused := ident == "nothing" && (strings.HasPrefix(s, "UPDATE") || strings.HasPrefix(s, "DELETE"))
			switch {
			case refused && (err == nil || !strings.Contains(err.Error(), "replica identity")):
				t.Errorf("%s: %v, want Postgres to refuse it for lack of a replica identity", s, err)
			case !refused && err != nil:
				t.Fatalf("%s: %v", s, err)
			}
		}
	}

	const (
		ins   = "insert old=-"
		upd   = "update old=-"
		trunc = "truncate old=-"
	)
	full := func(id, code, note string) string {
		return fmt.Sprintf(`{"code":%q,"id":%q,"note":%q,"tenant":"b"}`, code, id, note)
	}
	want := map[string][]string{
		// DEFAULT: the old row is the primary key.
		"default-b":   {ins, upd, `update old={"id":"1"}`, `delete old={"id":"2"}`, trunc},
		"default-all": {ins, upd, `update old={"id":"1"}`, `delete old={"id":"2"}`, trunc},
		"default-a":   {`update old={"id":"1"}`, `delete old={"id":"2"}`, trunc}, // over-delivered
		// USING INDEX: the old row is the index's columns.
		"index-b":   {ins, upd, `update old={"code":"k1"}`, `delete old={"code":"k2"}`, trunc},
		"index-all": {ins, upd, `update old={"code":"k1"}`, `delete old={"code":"k2"}`, trunc},
		"index-a":   {`update old={"code":"k1"}`, `delete old={"code":"k2"}`, trunc}, // over-delivered
		// FULL: the whole old row; deletes are filtered.
		"full-b": {ins, "update old=" + full("1", "k1", "n0"), "update old=" + full("1", "k1", "n1"),
			"delete old=" + full("2", "k2", "n1"), trunc},
		"full-all": {ins, "update old=" + full("1", "k1", "n0"), "update old=" + full("1", "k1", "n1"),
			"delete old=" + full("2", "k2", "n1"), trunc},
		"full-a": {trunc},
		// NOTHING: only inserts and truncates get through.
		"nothing-b":   {ins, trunc},
		"nothing-all": {ins, trunc},
		"nothing-a":   {trunc},
	}
	waitRows(t, rec, want)

	// Over-delivered: default-b's and index-b's deletes (reached through the
	// absent tenant only), default-a's and index-a's key-changing updates
	// and deletes.
	if v := scrape(t, d)["ledgerd_overdelivered_changes_total"]; v != 6 {
		t.Errorf("ledgerd_overdelivered_changes_total = %v, want 6", v)
	}
	var st wire.Status
	if _, err := d.c.Do(ctx, "GET", "/v1/status", "", nil, &st); err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, kt := range st.KeyOnlyTables {
		listed = append(listed, fmt.Sprintf("%s %s %v %d", kt.Table, kt.ReplicaIdentity, kt.Columns, kt.Shapes))
	}
	if w := []string{"public.t_default default [tenant] 2", "public.t_index index [tenant] 2", "public.t_nothing nothing [tenant] 2"}; !slices.Equal(listed, w) || st.KeyOnlyError != "" {
		t.Errorf("status key-only tables %q (error %q), want %q", listed, st.KeyOnlyError, w)
	}
}

// TestReplicaIdentityFullFlag: with -replica-identity full, the first shape
// filtering a table on a column outside its key makes the table's replica
// identity FULL (once), so its deletes are filtered; on a table the
// daemon's role does not own, the ALTER fails, the daemon says why in its
// log and the PUT answer carries the warning instead.
func TestReplicaIdentityFullFlag(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	role := "ri_" + slot
	sql(t, dsn,
		"DROP ROLE IF EXISTS "+role,
		"CREATE ROLE "+role+" LOGIN REPLICATION",
		"CREATE TABLE mine (id int PRIMARY KEY, tenant text)",
		"ALTER TABLE mine OWNER TO "+role,
		"CREATE TABLE theirs (id int PRIMARY KEY, tenant text)",
		"CREATE PUBLICATION "+slot+" FOR ALL TABLES",
	)
	t.Cleanup(func() {
		sql(t, cluster.ConnString("postgres"), "DROP ROLE IF EXISTS "+role)
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	d := startDaemon(t, u.String(), slot, "", "-replica-identity", "full")
	t.Cleanup(func() { sql(t, dsn, "DROP TABLE IF EXISTS mine", "DROP OWNED BY "+role) })

	ctx := context.Background()
	k, err := d.c.Register(ctx, client.ConsumerConfig{ID: "c", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	put := func(id, table, tenant string) wire.ShapeResponse {
		t.Helper()
		res, err := k.PutShape(ctx, id, table, map[string][]string{"tenant": {tenant}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := put("mine-a", "public.mine", "a"); len(res.Warnings) != 0 {
		t.Errorf("PUT mine-a warnings %q, want none: ledgerd owns the table and sets FULL", res.Warnings)
	}
	if res := put("mine-b", "public.mine", "b"); len(res.Warnings) != 0 {
		t.Errorf("PUT mine-b warnings %q, want none", res.Warnings)
	}
	res := put("theirs-a", "public.theirs", "a")
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "must be owner") || !strings.Contains(res.Warnings[0], "REPLICA IDENTITY FULL") {
		t.Errorf("PUT theirs-a warnings %q, want one saying the ALTER was refused and how to fix it", res.Warnings)
	}
	var ident string
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for table, want := range map[string]string{"mine": "f", "theirs": "d"} {
		if err := conn.QueryRow(ctx, "SELECT relreplident::text FROM pg_class WHERE oid = $1::regclass", table).Scan(&ident); err != nil {
			t.Fatal(err)
		}
		if ident != want {
			t.Errorf("table %s has replica identity %q, want %q", table, ident, want)
		}
	}
	log := d.logText()
	if n := strings.Count(log, "set replica identity full:"); n != 1 {
		t.Errorf("%d log lines setting replica identity full, want 1 (the first filtered shape only)", n)
	}
	if !strings.Contains(log, "could not set replica identity full") {
		t.Error("the refused ALTER TABLE was not logged")
	}

	rec := runRows(t, k)
	sql(t, dsn, "INSERT INTO mine VALUES (1, 'b')", "DELETE FROM mine", "INSERT INTO theirs VALUES (1, 'b')", "DELETE FROM theirs")
	waitRows(t, rec, map[string][]string{
		"mine-a":   nil,
		"mine-b":   {"insert old=-", `delete old={"id":"1","tenant":"b"}`},
		"theirs-a": {`delete old={"id":"1"}`}, // over-delivered: the ALTER was refused
	})
}

// TestReplicaIdentityFullAtStart: a shape created without
// -replica-identity full keeps its table's identity (and gets the warning);
// when ledgerd starts again with the flag, the table of that existing shape
// is set FULL, as a new shape's would be, and its deletes are filtered.
func TestReplicaIdentityFullAtStart(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE orders (id int PRIMARY KEY, tenant text)")
	d := startDaemon(t, dsn, slot, "")
	ctx := context.Background()
	k, err := d.c.Register(ctx, client.ConsumerConfig{ID: "c", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	res, err := k.PutShape(ctx, "a", "public.orders", map[string][]string{"tenant": {"a"}})
	if err != nil || len(res.Warnings) != 1 {
		t.Fatalf("PUT without the flag: warnings %q, %v; want one", res.Warnings, err)
	}
	identity := func() string {
		var ident string
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, "SELECT relreplident::text FROM pg_class WHERE oid = 'orders'::regclass").Scan(&ident); err != nil {
			t.Fatal(err)
		}
		return ident
	}
	if got := identity(); got != "d" {
		t.Fatalf("without the flag the table's identity became %q", got)
	}
	d.stop()

	d = startDaemonOn(t, d.addr, dsn, slot, d.dbPath, "-replica-identity", "full")
	if got := identity(); got != "f" {
		t.Errorf("after a start with -replica-identity full the table's identity is %q, want f (FULL)", got)
	}
	var st wire.Status
	if _, err := d.c.Do(ctx, "GET", "/v1/status", "", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.KeyOnlyTables == nil || len(st.KeyOnlyTables) != 0 {
		t.Errorf("status key-only tables %+v, want none", st.KeyOnlyTables)
	}
}
