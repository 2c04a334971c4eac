package main_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// ddlConsumer is a running consumer that also records the evicted frames it
// gets.
type ddlConsumer struct {
	*recorder
	k       *client.Consumer
	mu      sync.Mutex
	evicted map[string]string // shape -> reason
}

func (c *ddlConsumer) evictedReason(shape string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.evicted[shape]
}

// runDDLConsumer registers a consumer with the given shapes and runs it
// until the test ends.
func runDDLConsumer(t *testing.T, d *daemon, id string, shapes map[string]shapeDef) *ddlConsumer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	k, err := d.c.Register(ctx, client.ConsumerConfig{ID: id, TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for sid, def := range shapes {
		if _, err := k.PutShape(ctx, sid, def.table, def.filter); err != nil {
			t.Fatal(err)
		}
	}
	c := &ddlConsumer{recorder: newRecorder(), k: k, evicted: map[string]string{}}
	done := make(chan error, 1)
	go func() {
		done <- k.Run(ctx, c.handle, client.RunOptions{
			OnEvicted: func(shape, reason string) {
				c.mu.Lock()
				c.evicted[shape] = reason
				c.mu.Unlock()
			},
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer %s: %v", id, err)
		}
	})
	return c
}

// ids returns the row ids a shape received, in order.
func (c *ddlConsumer) ids(shape string) []string {
	c.recorder.mu.Lock()
	defer c.recorder.mu.Unlock()
	var out []string
	for _, e := range c.events[shape] {
		out = append(out, e.ID)
	}
	return out
}

func (c *ddlConsumer) waitRow(t *testing.T, shape, id string) {
	t.Helper()
	waitFor(t, "shape "+shape+" to receive row "+id, 30*time.Second, func() bool {
		for _, got := range c.ids(shape) {
			if got == id {
				return true
			}
		}
		return false
	})
}

// tombstone returns the shape's tombstone, if it has one.
func tombstone(t *testing.T, d *daemon, shape string) (wire.Tombstone, bool) {
	t.Helper()
	var out []wire.Tombstone
	if _, err := d.c.Do(context.Background(), "GET", "/v1/evictions", "", nil, &out); err != nil {
		t.Fatal(err)
	}
	for _, ts := range out {
		if ts.Shape == shape {
			return ts, true
		}
	}
	return wire.Tombstone{}, false
}

// waitRelationChanged waits until the shape is evicted and its consumer got
// the evicted frame, checks the reason and that the evidence names every
// one of words, and that the shape is gone from the API.
func waitRelationChanged(t *testing.T, d *daemon, c *ddlConsumer, shape string, words ...string) wire.Tombstone {
	t.Helper()
	var ts wire.Tombstone
	waitFor(t, "shape "+shape+" to be evicted", 30*time.Second, func() bool {
		var ok bool
		ts, ok = tombstone(t, d, shape)
		return ok
	})
	t.Logf("shape %s evicted by the %s: %s", shape, ts.Actor, ts.Evidence)
	if ts.Reason != string(ledger.ReasonRelationChanged) {
		t.Fatalf("shape %s evicted as %q (%s), want relation_changed", shape, ts.Reason, ts.Evidence)
	}
	for _, w := range words {
		if !strings.Contains(ts.Evidence, w) {
			t.Errorf("evidence of shape %s %q does not name %q", shape, ts.Evidence, w)
		}
	}
	waitFor(t, "the evicted frame of shape "+shape, 30*time.Second, func() bool { return c.evictedReason(shape) != "" })
	if r := c.evictedReason(shape); r != string(ledger.ReasonRelationChanged) {
		t.Errorf("evicted frame of shape %s says %q, want relation_changed", shape, r)
	}
	_, err := d.c.Do(context.Background(), "GET", "/v1/shapes/"+shape, "", nil, nil)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 410 || ce.Reason != string(ledger.ReasonRelationChanged) {
		t.Errorf("GET shape %s after the eviction: %v, want 410 (relation_changed)", shape, err)
	}
	return ts
}

// assertLive checks, after a few more reconcile passes, that the shapes are
// still tracked and have no tombstone.
func assertLive(t *testing.T, d *daemon, shapes ...string) {
	t.Helper()
	passes := scrape(t, d)["ledgerd_reconcile_passes_total"]
	waitFor(t, "three more reconcile passes", 30*time.Second, func() bool {
		return scrape(t, d)["ledgerd_reconcile_passes_total"] >= passes+3
	})
	for _, sh := range shapes {
		if ts, ok := tombstone(t, d, sh); ok {
			t.Errorf("shape %s was evicted (%s: %s); the change left its table and filter columns in place", sh, ts.Reason, ts.Evidence)
		}
		if _, err := d.c.Do(context.Background(), "GET", "/v1/shapes/"+sh, "", nil, nil); err != nil {
			t.Errorf("GET shape %s: %v, want it live", sh, err)
		}
	}
}

// TestDDLRenameEvicts: renaming a shape's table evicts the shape as
// relation_changed, with the old and the new name in the evidence, whether
// DML on the renamed table follows (seen in the stream, in WAL order: the
// shape does not get the row written under the new name) or not (seen by
// the catalog check). A new shape on the new name gets the table's rows.
func TestDDLRenameEvicts(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn,
		"CREATE TABLE orders (id int PRIMARY KEY, tenant text)",
		"CREATE TABLE items (id int PRIMARY KEY, name text)",
		"CREATE TABLE other (id int PRIMARY KEY)")
	d := startDaemon(t, dsn, slot, "", "-reconcile-interval", "200ms")
	c := runDDLConsumer(t, d, "c", map[string]shapeDef{
		"o":      {"public.orders", map[string][]string{"tenant": {"a"}}},
		"i":      {"public.items", nil},
		"keeper": {"public.other", nil},
	})
	sql(t, dsn, "INSERT INTO orders VALUES (1, 'a')", "INSERT INTO items VALUES (1, 'x')")
	c.waitRow(t, "o", "1")
	c.waitRow(t, "i", "1")

	sql(t, dsn, "BEGIN; ALTER TABLE orders RENAME TO orders_v2; INSERT INTO orders_v2 VALUES (2, 'a'); COMMIT",
		"ALTER TABLE items RENAME TO items_v2")
	waitRelationChanged(t, d, c, "o", "public.orders", "public.orders_v2")
	waitRelationChanged(t, d, c, "i", "public.items", "public.items_v2")

	if _, err := c.k.PutShape(context.Background(), "o2", "public.orders_v2", map[string][]string{"tenant": {"a"}}); err != nil {
		t.Fatal(err)
	}
	sql(t, dsn, "INSERT INTO orders_v2 VALUES (3, 'a')", "INSERT INTO other VALUES (1)")
	c.waitRow(t, "o2", "3")
	c.waitRow(t, "keeper", "1")
	if got := c.ids("o"); len(got) != 1 {
		t.Errorf("shape o on public.orders got rows %v, want only row 1 (written before the rename)", got)
	}
	assertLive(t, d, "o2", "keeper")
}

// TestDDLDropTableEvicts: dropping a shape's table evicts the shape, though
// Postgres sends nothing for DROP TABLE: the catalog check finds the
// relation gone. The consumer's other shapes keep working.
func TestDDLDropTableEvicts(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE orders (id int PRIMARY KEY, tenant text)", "CREATE TABLE other (id int PRIMARY KEY)")
	d := startDaemon(t, dsn, slot, "", "-reconcile-interval", "200ms")
	c := runDDLConsumer(t, d, "c", map[string]shapeDef{
		"o":      {"public.orders", nil},
		"keeper": {"public.other", nil},
	})
	sql(t, dsn, "INSERT INTO orders VALUES (1, 'a')")
	c.waitRow(t, "o", "1")

	sql(t, dsn, "DROP TABLE orders")
	waitRelationChanged(t, d, c, "o", "public.orders", "dropped")
	sql(t, dsn, "INSERT INTO other VALUES (1)")
	c.waitRow(t, "keeper", "1")
	assertLive(t, d, "keeper")
}

// TestDDLDropFilterColumnEvicts: dropping a column a shape's filter names
// evicts the shape (seen by the catalog check: no DML follows), with the
// column in the evidence; a shape filtering on another column of the table
// keeps receiving its rows.
func TestDDLDropFilterColumnEvicts(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE orders (id int PRIMARY KEY, tenant text, region text)")
	d := startDaemon(t, dsn, slot, "", "-reconcile-interval", "200ms")
	c := runDDLConsumer(t, d, "c", map[string]shapeDef{
		"by-tenant": {"public.orders", map[string][]string{"tenant": {"a"}}},
		"by-region": {"public.orders", map[string][]string{"region": {"eu"}}},
	})
	sql(t, dsn, "INSERT INTO orders VALUES (1, 'a', 'eu')")
	c.waitRow(t, "by-tenant", "1")
	c.waitRow(t, "by-region", "1")

	sql(t, dsn, "ALTER TABLE orders DROP COLUMN tenant")
	waitRelationChanged(t, d, c, "by-tenant", "tenant", "public.orders")
	sql(t, dsn, "INSERT INTO orders VALUES (2, 'eu')")
	c.waitRow(t, "by-region", "2")
	if got := c.ids("by-tenant"); len(got) != 1 {
		t.Errorf("shape by-tenant got rows %v after its filter column was dropped, want only row 1", got)
	}
	assertLive(t, d, "by-region")
}

// TestDDLDropNonFilterColumnKeepsShape: dropping a column that a shape's
// filter does not name keeps the shape, and it goes on receiving rows
// decoded with the table's new columns. A shape that filters on the dropped
// column is evicted in the same transaction's stream order: it does not get
// the row written after the drop.
func TestDDLDropNonFilterColumnKeepsShape(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE orders (id int PRIMARY KEY, tenant text, note text)")
	d := startDaemon(t, dsn, slot, "", "-reconcile-interval", "200ms")
	c := runDDLConsumer(t, d, "c", map[string]shapeDef{
		"keep":    {"public.orders", map[string][]string{"tenant": {"a"}}},
		"all":     {"public.orders", nil},
		"by-note": {"public.orders", map[string][]string{"note": {"x"}}},
	})
	sql(t, dsn, "INSERT INTO orders VALUES (1, 'a', 'x')")
	c.waitRow(t, "keep", "1")
	c.waitRow(t, "all", "1")
	c.waitRow(t, "by-note", "1")

	sql(t, dsn, "BEGIN; ALTER TABLE orders DROP COLUMN note; INSERT INTO orders VALUES (2, 'a'); COMMIT")
	c.waitRow(t, "keep", "2")
	c.waitRow(t, "all", "2")
	waitRelationChanged(t, d, c, "by-note", "note")
	if got := c.ids("by-note"); len(got) != 1 {
		t.Errorf("shape by-note got rows %v, want only row 1 (written before its column was dropped)", got)
	}
	sql(t, dsn, "INSERT INTO orders VALUES (3, 'a')")
	c.waitRow(t, "keep", "3")
	assertLive(t, d, "keep", "all")
}

// TestDDLAddColumnKeepsShape: adding a column keeps the table's shapes
// delivering. A filter is checked against the table's columns when the
// shape is created: a column the table lacks is 422 unknown_column (the
// shape could never match a row), and once the column is added a shape
// filtering on it gets its rows.
func TestDDLAddColumnKeepsShape(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE orders (id int PRIMARY KEY, tenant text)")
	d := startDaemon(t, dsn, slot, "", "-reconcile-interval", "200ms")
	c := runDDLConsumer(t, d, "c", map[string]shapeDef{"s": {"public.orders", map[string][]string{"tenant": {"a"}}}})
	ctx := context.Background()

	_, err := c.k.PutShape(ctx, "early", "public.orders", map[string][]string{"region": {"eu"}})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 422 || ce.Code != wire.CodeUnknownColumn || !strings.Contains(ce.Message, "region") {
		t.Fatalf("shape filtering on a column the table lacks: %v, want 422 unknown_column naming the column", err)
	}

	sql(t, dsn, "ALTER TABLE orders ADD COLUMN region text", "INSERT INTO orders VALUES (1, 'a', 'eu')")
	c.waitRow(t, "s", "1")
	if _, err := c.k.PutShape(ctx, "r", "public.orders", map[string][]string{"region": {"eu"}}); err != nil {
		t.Fatal(err)
	}
	sql(t, dsn, "INSERT INTO orders VALUES (2, 'a', 'eu')", "ALTER TABLE orders ADD COLUMN note text",
		"INSERT INTO orders VALUES (3, 'a', 'eu', 'n')")
	c.waitRow(t, "r", "2")
	c.waitRow(t, "r", "3")
	c.waitRow(t, "s", "3")
	assertLive(t, d, "s", "r")
}

// TestDDLDropAndRecreateEvicts: a table dropped and created again under the
// same name is a new relation. The shape bound to the old one is evicted
// and never gets the new table's rows; a shape created on the new table
// does.
func TestDDLDropAndRecreateEvicts(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE orders (id int PRIMARY KEY, tenant text)")
	d := startDaemon(t, dsn, slot, "", "-reconcile-interval", "200ms")
	c := runDDLConsumer(t, d, "c", map[string]shapeDef{"o": {"public.orders", nil}})
	sql(t, dsn, "INSERT INTO orders VALUES (1, 'a')")
	c.waitRow(t, "o", "1")
	relation := func(shape string) uint32 {
		var sh wire.Shape
		if _, err := d.c.Do(context.Background(), "GET", "/v1/shapes/"+shape, "", nil, &sh); err != nil {
			t.Fatal(err)
		}
		return sh.RelationOID
	}
	old := relation("o")

	sql(t, dsn, "BEGIN; DROP TABLE orders; CREATE TABLE orders (id int PRIMARY KEY, tenant text); INSERT INTO orders VALUES (2, 'a'); COMMIT")
	waitRelationChanged(t, d, c, "o", "public.orders")
	if _, err := c.k.PutShape(context.Background(), "o2", "public.orders", nil); err != nil {
		t.Fatal(err)
	}
	sql(t, dsn, "INSERT INTO orders VALUES (3, 'a')")
	c.waitRow(t, "o2", "3")
	if got := c.ids("o"); len(got) != 1 {
		t.Errorf("shape o on the dropped table got rows %v, want only row 1", got)
	}
	if now := relation("o2"); old == 0 || now == 0 || now == old {
		t.Errorf("shape o was bound to relation %d, o2 on the table created again to %d: want two relations", old, now)
	}
	assertLive(t, d, "o2")
}

// TestDDLFilterColumnOutsideColumnList: a publication with a column list
// sends only those columns, so a filter on another column could never be
// judged and would look dropped at the first change: it is 422
// unknown_column, naming the publication. A filter on a published column
// is accepted and delivers.
func TestDDLFilterColumnOutsideColumnList(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE orders (id int PRIMARY KEY, tenant text, region text)",
		"CREATE PUBLICATION "+slot+" FOR TABLE orders (id, region)")
	d := startDaemon(t, dsn, slot, "", "-reconcile-interval", "200ms")
	c := runDDLConsumer(t, d, "c", map[string]shapeDef{"by-region": {"public.orders", map[string][]string{"region": {"eu"}}}})

	_, err := c.k.PutShape(context.Background(), "by-tenant", "public.orders", map[string][]string{"tenant": {"a"}})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 422 || ce.Code != wire.CodeUnknownColumn || !strings.Contains(ce.Message, "publication "+slot) {
		t.Fatalf("shape filtering on an unpublished column: %v, want 422 unknown_column naming the publication", err)
	}
	sql(t, dsn, "INSERT INTO orders VALUES (1, 'a', 'eu')")
	c.waitRow(t, "by-region", "1")
	assertLive(t, d, "by-region")
}

// TestDDLWhileDownEvictsAtStart: a table dropped and another renamed while
// ledgerd is stopped: the restarted daemon evicts their shapes as
// relation_changed (nothing in the stream says so) and keeps the shape
// whose table is untouched.
func TestDDLWhileDownEvictsAtStart(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE orders (id int PRIMARY KEY)", "CREATE TABLE items (id int PRIMARY KEY)",
		"CREATE TABLE other (id int PRIMARY KEY)")
	d := startDaemon(t, dsn, slot, "", "-reconcile-interval", "200ms")
	ctx := context.Background()
	k, err := d.c.Register(ctx, client.ConsumerConfig{ID: "c", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for id, table := range map[string]string{"o": "public.orders", "i": "public.items", "keeper": "public.other"} {
		if _, err := k.PutShape(ctx, id, table, nil); err != nil {
			t.Fatal(err)
		}
	}
	d.stop()

	sql(t, dsn, "DROP TABLE orders", "ALTER TABLE items RENAME TO items_old")
	d = startDaemon(t, dsn, slot, d.dbPath, "-reconcile-interval", "200ms")
	for shape, words := range map[string][]string{"o": {"public.orders", "dropped"}, "i": {"public.items", "public.items_old"}} {
		var ts wire.Tombstone
		waitFor(t, "shape "+shape+" to be evicted after the restart", 30*time.Second, func() bool {
			var ok bool
			ts, ok = tombstone(t, d, shape)
			return ok
		})
		if ts.Reason != string(ledger.ReasonRelationChanged) {
			t.Errorf("shape %s evicted as %s (%s), want relation_changed", shape, ts.Reason, ts.Evidence)
		}
		for _, w := range words {
			if !strings.Contains(ts.Evidence, w) {
				t.Errorf("evidence of shape %s %q does not name %q", shape, ts.Evidence, w)
			}
		}
	}
	assertLive(t, d, "keeper")
}
