package main_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// TestPutShapesBatch: PUT /v1/consumers/{id}/shapes against real Postgres.
// Each shape is answered as PUT /v1/shapes/{id} would answer it (created,
// the same definition, a conflict, an unknown table or column, an invalid id,
// a value too long, over the consumer's limit), with the replica identity
// warning of a filter the table's deletes do not carry; the call needs the
// consumer's lease; the shapes it creates receive their changes.
func TestPutShapesBatch(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn,
		"CREATE TABLE orders (id int PRIMARY KEY, tenant text)",
		"CREATE TABLE items (id int PRIMARY KEY, tenant text)",
	)
	d := startDaemon(t, dsn, slot, "", "-max-shapes-per-consumer", "5", "-max-value-bytes", "16")
	ctx := context.Background()
	k, err := d.c.Register(ctx, client.ConsumerConfig{ID: "c1", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	other, err := d.c.Register(ctx, client.ConsumerConfig{ID: "c2", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tenant := func(v string) map[string][]string { return map[string][]string{"tenant": {v}} }
	first := []wire.ShapeItem{
		{ID: "a", Table: "orders", Filter: tenant("a")},
		{ID: "b", Table: "public.items", Filter: tenant("b")},
		{ID: "all", Table: "orders"},
	}
	res, err := k.PutShapes(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	want := func(res wire.ShapesResponse, statuses ...int) {
		t.Helper()
		if len(res.Shapes) != len(statuses) {
			t.Fatalf("%d answers, want %d: %+v", len(res.Shapes), len(statuses), res)
		}
		for i, st := range statuses {
			if r := res.Shapes[i]; r.Status != st {
				t.Errorf("shape %s: status %d (%+v), want %d", r.ID, r.Status, r.Error, st)
			}
		}
	}
	want(res, 201, 201, 201)
	for _, r := range res.Shapes {
		if r.Generation != 1 || r.StartLSN == "" {
			t.Errorf("created shape %+v: want generation 1 and a start LSN", r)
		}
	}
	if w := res.Shapes[0].Warnings; len(w) != 1 || !strings.Contains(w[0], "replica identity default") {
		t.Errorf("filtered shape on a REPLICA IDENTITY DEFAULT table: warnings %q, want the replica identity warning", w)
	}
	if len(res.Shapes[2].Warnings) != 0 {
		t.Errorf("unfiltered shape: warnings %q, want none", res.Shapes[2].Warnings)
	}

	// The same call again changes nothing.
	again, err := k.PutShapes(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	want(again, 200, 200, 200)
	for i, r := range again.Shapes {
		if r.Generation != 1 || r.StartLSN != res.Shapes[i].StartLSN {
			t.Errorf("shape %s put again: %+v, want generation 1 and start %s", r.ID, r, res.Shapes[i].StartLSN)
		}
	}

	// Mixed: every kind of refusal next to one creation.
	mixed, err := k.PutShapes(ctx, []wire.ShapeItem{
		{ID: "a", Table: "orders", Filter: tenant("z")},                          // another definition
		{ID: "c", Table: "orders", Filter: tenant("c")},                          // new
		{ID: "bad id", Table: "orders"},                                          // invalid id
		{ID: "d", Table: "nosuch"},                                               // unknown table
		{ID: "e", Table: "orders", Filter: map[string][]string{"nosuch": {"x"}}}, // unknown column
		{ID: "f", Table: "orders", Filter: tenant(strings.Repeat("x", 17))},      // value too long
		{ID: "g", Table: "items"},                                                // the consumer's fifth
		{ID: "h", Table: "items"},                                                // its sixth: over the limit
	})
	if err != nil {
		t.Fatal(err)
	}
	want(mixed, 409, 201, 422, 422, 422, 422, 201, 429)
	codes := []string{wire.CodeShapeConflict, "", wire.CodeInvalidID, wire.CodeUnknownTable, wire.CodeUnknownColumn,
		wire.CodeValueTooLong, "", wire.CodeTooManyShapes}
	for i, code := range codes {
		r := mixed.Shapes[i]
		if (code == "") != (r.Error == nil) || r.Error != nil && (r.Error.Code != code || r.Error.Message == "") {
			t.Errorf("shape %q: error %+v, want code %q", r.ID, r.Error, code)
		}
	}

	// Another consumer's id is a conflict for this one.
	theirs, err := other.PutShapes(ctx, []wire.ShapeItem{{ID: "a", Table: "orders", Filter: tenant("a")}, {ID: "x", Table: "orders"}})
	if err != nil {
		t.Fatal(err)
	}
	want(theirs, 409, 201)

	// The call needs the consumer's lease: 403 with another one, nothing created.
	req, err := newAuthRequest(http.MethodPut, d.url+"/v1/consumers/c1/shapes", `{"shapes":[{"id":"y","table":"orders"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(wire.HeaderLease, other.Lease())
	if status, we := d.doError(t, req); status != http.StatusForbidden || we.Code != wire.CodeWrongLease {
		t.Errorf("another consumer's lease: %d %q, want 403 %s", status, we.Code, wire.CodeWrongLease)
	}
	var ae *client.Error
	if _, err := d.c.Do(ctx, http.MethodGet, "/v1/shapes/y", "", nil, nil); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("shape y after a refused call: %v, want 404", err)
	}

	// The created shapes receive their changes.
	rec := runRows(t, k)
	sql(t, dsn, "INSERT INTO orders VALUES (1, 'a')", "INSERT INTO items VALUES (1, 'b')", "INSERT INTO orders VALUES (2, 'c')")
	waitRows(t, rec, map[string][]string{
		"a": {"insert old=-"}, "b": {"insert old=-"}, "all": {"insert old=-", "insert old=-"}, "c": {"insert old=-"}, "g": {"insert old=-"},
	})
}

// TestLeaseExpiresAmongManyShapes: a consumer whose lease expires among
// 20,000 shapes of other consumers has its shape evicted within its TTL plus
// one reconcile interval (I3), as it would alone. BenchmarkScale checks the
// same at a million shapes.
func TestLeaseExpiresAmongManyShapes(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE bench0 (id int PRIMARY KEY, tenant text)")
	d := startDaemon(t, dsn, slot, "", "-reconcile-interval", "1s", "-log-level", "info")
	ctx := context.Background()
	for c := range 20 {
		k, err := d.c.Register(ctx, client.ConsumerConfig{ID: fmt.Sprintf("c%d", c), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		items := make([]wire.ShapeItem, 1000)
		for i := range items {
			items[i] = wire.ShapeItem{ID: fmt.Sprintf("s%d-%d", c, i), Table: "bench0",
				Filter: map[string][]string{"tenant": {fmt.Sprint(c*1000 + i)}}}
		}
		res, err := k.PutShapes(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res.Shapes {
			if r.Status != http.StatusCreated {
				t.Fatalf("shape %s: %d %+v", r.ID, r.Status, r.Error)
			}
		}
	}
	ttl, interval := 2*time.Second, time.Second
	took := leaseExpiry(t, d, ttl, interval)
	// The poll and the calls around it add a little to what is measured.
	if limit := ttl + interval + 500*time.Millisecond; took > limit {
		t.Errorf("the shape of a consumer whose %v lease expired was evicted after %v among 20,000 shapes, want within %v (TTL + reconcile interval)",
			ttl, took, ttl+interval)
	}
	t.Logf("evicted %v after the registration", took)
}
