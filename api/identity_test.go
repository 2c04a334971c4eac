package api_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/internal/replident"
	"github.com/ledgerd/ledgerd/ledger"
)

// identities is a fake IdentityManager: tables' identities, errors to
// return, and the ALTERs it was asked for.
type identities struct {
	mu      sync.Mutex
	ids     map[string]replident.Identity
	readErr error
	setErr  error
	set     []string
}

func (f *identities) ReplicaIdentity(_ context.Context, tables []string) (map[string]replident.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readErr != nil {
		return nil, f.readErr
	}
	out := map[string]replident.Identity{}
	for _, t := range tables {
		if id, ok := f.ids[t]; ok {
			out[t] = id
		}
	}
	return out, nil
}

func (f *identities) SetReplicaIdentityFull(_ context.Context, table string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set = append(f.set, table)
	if f.setErr != nil {
		return f.setErr
	}
	id := f.ids[table]
	id.Mode = replident.ModeFull
	f.ids[table] = id
	return nil
}

func identityServer(t *testing.T, f *identities, setFull bool) (*client.Client, *client.Consumer) {
	t.Helper()
	l, err := ledger.Open(ledger.Config{Path: t.TempDir() + "/ledger.db", Identity: ledger.Identity{SystemID: "1", Slot: "ledgerd"}})
	if err != nil {
		t.Fatal(err)
	}
	hub := deliver.New(deliver.Config{Ledger: l, KeepaliveInterval: time.Hour})
	srv := httptest.NewServer(api.New(api.Config{Ledger: l, Hub: hub, SlotName: "ledgerd", Token: token,
		Identity: f, SetIdentityFull: setFull}).Handler())
	t.Cleanup(func() {
		hub.Close()
		srv.Close()
		_ = l.Close()
	})
	c, err := client.New(client.Config{URL: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.Register(context.Background(), client.ConsumerConfig{ID: "c", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func orders() map[string]replident.Identity {
	return map[string]replident.Identity{"public.orders": {Table: "public.orders", Mode: replident.ModeDefault, Key: []string{"id"}}}
}

// TestShapeWarnings: a shape filtered on a column outside its table's key
// is created with a warning naming the column and the fix; one filtered on
// the key, or unfiltered, gets none; a failure to read the identity is a
// warning, never a failed PUT (over-delivery loses nothing).
func TestShapeWarnings(t *testing.T) {
	f := &identities{ids: orders()}
	c, k := identityServer(t, f, false)
	ctx := context.Background()
	res, err := k.PutShape(ctx, "by-tenant", "public.orders", map[string][]string{"tenant": {"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "tenant") || !strings.Contains(res.Warnings[0], "replica identity default") ||
		!strings.Contains(res.Warnings[0], "-replica-identity full") {
		t.Errorf("warnings %q, want one naming tenant, the identity and the fix", res.Warnings)
	}
	for id, filter := range map[string]map[string][]string{"by-id": {"id": {"1"}}, "all": nil} {
		if res, err := k.PutShape(ctx, id, "public.orders", filter); err != nil || len(res.Warnings) != 0 {
			t.Errorf("PUT %s: warnings %q, %v; want none", id, res.Warnings, err)
		}
	}
	if len(f.set) != 0 {
		t.Errorf("ALTER TABLE ran without -replica-identity full: %v", f.set)
	}
	var st wire.Status
	if _, err := c.Do(ctx, "GET", "/v1/status", "", nil, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.KeyOnlyTables) != 1 || st.KeyOnlyTables[0].Table != "public.orders" || st.KeyOnlyTables[0].Shapes != 1 {
		t.Errorf("status key-only tables %+v, want public.orders with 1 shape", st.KeyOnlyTables)
	}

	f.readErr = errors.New("connection refused")
	res, err = k.PutShape(ctx, "by-region", "public.orders", map[string][]string{"region": {"eu"}})
	if err != nil {
		t.Fatalf("PUT with the identity unreadable: %v, want the shape created", err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "connection refused") {
		t.Errorf("warnings %q, want one saying the identity could not be read", res.Warnings)
	}
	st = wire.Status{}
	if _, err := c.Do(ctx, "GET", "/v1/status", "", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.KeyOnlyTables != nil || !strings.Contains(st.KeyOnlyError, "connection refused") {
		t.Errorf("status with the identity unreadable: %+v %q, want the error and no list", st.KeyOnlyTables, st.KeyOnlyError)
	}
}

// TestSetIdentityFull: with SetIdentityFull the first shape filtering a
// table on a non-key column sets FULL, later ones find it FULL; a refused
// ALTER falls back to the warning, carrying Postgres' reason.
func TestSetIdentityFull(t *testing.T) {
	f := &identities{ids: orders()}
	_, k := identityServer(t, f, true)
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		res, err := k.PutShape(ctx, id, "public.orders", map[string][]string{"tenant": {id}})
		if err != nil || len(res.Warnings) != 0 {
			t.Errorf("PUT %s: warnings %q, %v; want none", id, res.Warnings, err)
		}
	}
	if len(f.set) != 1 || f.set[0] != "public.orders" {
		t.Errorf("ALTERs %v, want one on public.orders", f.set)
	}

	f.ids = orders()
	f.setErr = errors.New("must be owner of table orders")
	res, err := k.PutShape(ctx, "c", "public.orders", map[string][]string{"tenant": {"c"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "must be owner") || !strings.Contains(res.Warnings[0], "REPLICA IDENTITY FULL") {
		t.Errorf("warnings %q, want the refusal and the fix", res.Warnings)
	}
}
