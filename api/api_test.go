package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

const token = "s3cret"

// tables is the TableChecker of the tests: a fixed set of tables.
type tables map[string]bool

func (t tables) CheckTable(_ context.Context, table string) error {
	if !t[table] {
		return fmt.Errorf("%w: table %s does not exist", api.ErrUnknownTable, table)
	}
	return nil
}

type env struct {
	t   *testing.T
	l   *ledger.Ledger
	hub *deliver.Hub
	srv *httptest.Server
	c   *client.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvClock(t, nil)
}

// newEnvClock is newEnv with the ledger's clock; nil means the system clock.
func newEnvClock(t *testing.T, clock ledger.Clock) *env {
	t.Helper()
	return buildEnv(t, clock, nil)
}

// newEnvWith is newEnv with a hook that adjusts the server's Config.
func newEnvWith(t *testing.T, adjust func(*api.Config)) *env {
	t.Helper()
	return buildEnv(t, nil, adjust)
}

func buildEnv(t *testing.T, clock ledger.Clock, adjust func(*api.Config)) *env {
	t.Helper()
	path := t.TempDir() + "/ledger.db"
	l, err := ledger.Open(ledger.Config{Path: path, Identity: ledger.Identity{SystemID: "1", Slot: "ledgerd"}, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	hub := deliver.New(deliver.Config{Ledger: l, KeepaliveInterval: time.Hour})
	cfg := api.Config{Ledger: l, Hub: hub, Tables: tables{"public.orders": true, "public.items": true},
		SlotName: "ledgerd", Token: token}
	if adjust != nil {
		adjust(&cfg)
	}
	srv := httptest.NewServer(api.New(cfg).Handler())
	t.Cleanup(func() {
		hub.Close()
		srv.Close()
		if err := l.Close(); err != nil {
			t.Errorf("closing the ledger: %v", err)
		}
		// The file must still be a consistent ledger whatever the API was sent.
		problems, err := ledger.Verify(path)
		if err != nil || len(problems) > 0 {
			t.Errorf("ledger verify: %v %v", problems, err)
		}
	})
	c, err := client.New(client.Config{URL: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, l: l, hub: hub, srv: srv, c: c}
}

// raw sends a call with a raw body and returns the status and error code.
func (e *env) raw(method, path, lease, auth, body string) (int, wire.Error) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if lease != "" {
		req.Header.Set(wire.HeaderLease, lease)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var we wire.Error
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &we); err != nil || we.Code == "" || we.Message == "" {
			e.t.Errorf("%s %s: %d answer is not an error object: %q", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, we
}

func (e *env) register(id string) *client.Consumer {
	e.t.Helper()
	k, err := e.c.Register(context.Background(), client.ConsumerConfig{ID: id, TTL: time.Minute})
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

func ins(table string, kv ...string) stream.Change {
	ch := stream.Change{Op: stream.OpInsert, Table: table}
	for i := 0; i+1 < len(kv); i += 2 {
		ch.New = append(ch.New, stream.Column{Name: kv[i], Value: kv[i+1]})
	}
	return ch
}

func (e *env) feed(lsn ledger.LSN, changes ...stream.Change) {
	e.t.Helper()
	err := e.hub.HandleTxn(context.Background(), &stream.Txn{Xid: uint32(lsn), CommitLSN: lsn, EndLSN: lsn + 0x10,
		CommitTime: time.Now(), Changes: changes})
	if err != nil {
		e.t.Fatal(err)
	}
}

// nextTxn reads frames until a txn frame.
func nextTxn(t *testing.T, s *client.Stream) *client.Txn {
	t.Helper()
	for {
		_, txn, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if txn != nil {
			return txn
		}
	}
}

// TestBadInput sends every kind of bad input docs/api.md names, checks status
// and error code, and then checks that streaming and acking still work.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k := e.register("c1")
	other := e.register("c2")
	if _, err := k.PutShape(ctx, "s1", "public.orders", map[string][]string{"tenant": {"a"}}); err != nil {
		t.Fatal(err)
	}
	bearer := "Bearer " + token
	lease := k.Lease()
	big := `{"id":"` + strings.Repeat("x", 2<<20) + `"}`
	// A lease that was valid once: c3 registers, releases, registers again.
	old := e.register("c3")
	if err := old.Release(ctx); err != nil {
		t.Fatal(err)
	}
	e.register("c3")

	tests := []struct {
		name                string
		method, path, lease string
		auth                string
		body                string
		status              int
		code                string
	}{
		{"malformed JSON", "POST", "/v1/consumers", "", bearer, `{"id": "x",`, 400, wire.CodeMalformedJSON},
		{"not an object", "POST", "/v1/consumers", "", bearer, `[1,2]`, 400, wire.CodeMalformedJSON},
		{"trailing data", "POST", "/v1/consumers", "", bearer, `{"id":"x"} {"id":"y"}`, 400, wire.CodeMalformedJSON},
		{"empty body", "POST", "/v1/consumers", "", bearer, ``, 400, wire.CodeMalformedJSON},
		{"unknown field", "POST", "/v1/consumers", "", bearer, `{"id":"x","ttl":5}`, 400, wire.CodeUnknownField},
		{"unknown field in a shape", "PUT", "/v1/shapes/s9", lease, bearer, `{"consumer":"c1","table":"public.orders","where":"x"}`, 400, wire.CodeUnknownField},
		{"wrong type", "POST", "/v1/consumers", "", bearer, `{"id":"x","ttl_ms":"soon"}`, 400, wire.CodeMalformedJSON},
		{"negative ttl", "POST", "/v1/consumers", "", bearer, `{"id":"x","ttl_ms":-1}`, 400, wire.CodeInvalid},
		{"id with a slash", "POST", "/v1/consumers", "", bearer, `{"id":"a/b"}`, 422, wire.CodeInvalidID},
		{"malformed LSN", "POST", "/v1/consumers/c1/ack", lease, bearer, `{"acks":{"s1":"zz/1"}}`, 400, wire.CodeMalformedLSN},
		{"malformed LSN (all shapes)", "POST", "/v1/consumers/c1/ack", lease, bearer, `{"lsn":"16B3748"}`, 400, wire.CodeMalformedLSN},
		{"two ack forms", "POST", "/v1/consumers/c1/ack", lease, bearer, `{"lsn":"0/1","defer":["s1"]}`, 400, wire.CodeInvalid},
		{"ack past what was delivered", "POST", "/v1/consumers/c1/ack", lease, bearer, `{"acks":{"s1":"FF/0"}}`, 400, wire.CodeAckBeyondDelivered},
		{"ack all past what was delivered", "POST", "/v1/consumers/c1/ack", lease, bearer, `{"lsn":"FF/0"}`, 400, wire.CodeAckBeyondDelivered},
		{"empty filter values", "PUT", "/v1/shapes/s9", lease, bearer, `{"consumer":"c1","table":"public.orders","filter":{"tenant":[]}}`, 400, wire.CodeInvalid},
		{"missing bearer token", "POST", "/v1/consumers", "", "", `{"id":"x"}`, 401, wire.CodeUnauthorized},
		{"wrong bearer token", "GET", "/v1/status", "", "Bearer nope", ``, 401, wire.CodeUnauthorized},
		{"missing bearer on metrics", "GET", "/metrics", "", "", ``, 401, wire.CodeUnauthorized},
		{"missing lease", "POST", "/v1/consumers/c1/heartbeat", "", bearer, `{}`, 403, wire.CodeWrongLease},
		{"wrong lease", "POST", "/v1/consumers/c1/ack", "not-the-lease", bearer, `{"lsn":"0/1"}`, 403, wire.CodeWrongLease},
		{"stale lease", "POST", "/v1/consumers/c3/heartbeat", old.Lease(), bearer, `{}`, 403, wire.CodeWrongLease},
		{"another consumer's lease on a stream", "GET", "/v1/consumers/c1/stream", other.Lease(), bearer, ``, 403, wire.CodeWrongLease},
		{"shape with another consumer's lease", "PUT", "/v1/shapes/s9", other.Lease(), bearer, `{"consumer":"c1","table":"public.orders"}`, 403, wire.CodeWrongLease},
		{"delete a shape with another lease", "DELETE", "/v1/shapes/s1", other.Lease(), bearer, ``, 403, wire.CodeWrongLease},
		{"unknown consumer", "POST", "/v1/consumers/nobody/heartbeat", "x", bearer, `{}`, 404, wire.CodeConsumerNotFound},
		{"unknown consumer stream", "GET", "/v1/consumers/nobody/stream", "x", bearer, ``, 404, wire.CodeConsumerNotFound},
		{"unknown shape", "GET", "/v1/shapes/nope", "", bearer, ``, 404, wire.CodeShapeNotFound},
		{"delete an unknown shape", "DELETE", "/v1/shapes/nope", lease, bearer, ``, 404, wire.CodeShapeNotFound},
		{"ack an unknown shape", "POST", "/v1/consumers/c1/ack", lease, bearer, `{"acks":{"nope":"0/1"}}`, 404, wire.CodeShapeNotFound},
		{"shape of an unknown consumer", "PUT", "/v1/shapes/s9", "x", bearer, `{"consumer":"nobody","table":"public.orders"}`, 404, wire.CodeConsumerNotFound},
		{"unknown path", "GET", "/v2/anything", "", bearer, ``, 404, wire.CodeNotFound},
		{"wrong method", "GET", "/v1/consumers/c1/ack", lease, bearer, ``, 405, wire.CodeMethodNotAllowed},
		{"duplicate consumer", "POST", "/v1/consumers", "", bearer, `{"id":"c1","ttl_ms":1000}`, 409, wire.CodeConsumerExists},
		{"conflicting shape definition", "PUT", "/v1/shapes/s1", lease, bearer, `{"consumer":"c1","table":"public.items"}`, 409, wire.CodeShapeConflict},
		{"conflicting shape filter", "PUT", "/v1/shapes/s1", lease, bearer, `{"consumer":"c1","table":"public.orders","filter":{"tenant":["b"]}}`, 409, wire.CodeShapeConflict},
		{"unknown table", "PUT", "/v1/shapes/s9", lease, bearer, `{"consumer":"c1","table":"public.nope"}`, 422, wire.CodeUnknownTable},
		{"2 MiB body", "POST", "/v1/consumers", "", bearer, big, 413, wire.CodeBodyTooLarge},
		{"2 MiB ack", "POST", "/v1/consumers/c1/ack", lease, bearer, big, 413, wire.CodeBodyTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, we := e.raw(tc.method, tc.path, tc.lease, tc.auth, tc.body)
			if status != tc.status || we.Code != tc.code {
				t.Errorf("%s %s: got %d %q (%s), want %d %q", tc.method, tc.path, status, we.Code, we.Message, tc.status, tc.code)
			}
		})
	}

	// Nothing above changed the state: s1 as created, c1 still leased.
	if sh, ok := e.l.Shape("s1"); !ok || sh.Table != "public.orders" || sh.FlushedLSN != 0 {
		t.Fatalf("shape s1 after bad input: %+v %v", sh, ok)
	}
	if _, ok := e.l.Shape("s9"); ok {
		t.Fatal("a refused PUT created shape s9")
	}
	// And the daemon still streams and acks.
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e.feed(0x100, ins("public.orders", "tenant", "a"))
	txn := nextTxn(t, s)
	if txn.LSN != 0x100 || len(txn.Changes) != 1 || txn.Changes[0].Shapes[0] != "s1" {
		t.Fatalf("txn after bad input: %+v", txn)
	}
	res, err := k.Ack(ctx, map[string]ledger.LSN{"s1": 0x100})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Gone) != 0 {
		t.Errorf("ack answer gone: %v", res.Gone)
	}
	if sh, _ := e.l.Shape("s1"); sh.FlushedLSN != 0x100 {
		t.Errorf("flushed %s after the ack", sh.FlushedLSN)
	}
}

func TestConsumerLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k := e.register("c1")
	r1, err := k.PutShape(ctx, "s1", "orders", nil) // bare name means public.orders
	if err != nil {
		t.Fatal(err)
	}
	if r1.Generation != 1 {
		t.Errorf("generation %d", r1.Generation)
	}
	// Same definition again: 200.
	status, err := e.c.Do(ctx, "PUT", "/v1/shapes/s1", k.Lease(), wire.ShapeRequest{Consumer: "c1", Table: "public.orders"}, nil)
	if err != nil || status != 200 {
		t.Errorf("same definition again: %d %v, want 200", status, err)
	}
	status, err = e.c.Do(ctx, "PUT", "/v1/shapes/s2", k.Lease(), wire.ShapeRequest{Consumer: "c1", Table: "public.items"}, nil)
	if err != nil || status != 201 {
		t.Errorf("new shape: %d %v, want 201", status, err)
	}
	hb, err := k.Heartbeat(ctx, []string{"s1", "s2"})
	if err != nil || hb.ExpiresAt.IsZero() || len(hb.Evicted) != 0 {
		t.Errorf("heartbeat: %+v %v", hb, err)
	}
	// An operator evicts s2: the heartbeat says so, acks name it gone.
	var ev wire.EvictResponse
	if _, err := e.c.Do(ctx, "POST", "/v1/shapes/s2/evict", "", wire.EvictRequest{DryRun: true}, &ev); err != nil || !ev.DryRun {
		t.Fatalf("dry run: %+v %v", ev, err)
	}
	if _, ok := e.l.Shape("s2"); !ok {
		t.Fatal("a dry run evicted the shape")
	}
	if _, err := e.c.Do(ctx, "POST", "/v1/shapes/s2/evict", "", wire.EvictRequest{}, &ev); err != nil || ev.Tombstone == nil || ev.Tombstone.Reason != "manual" {
		t.Fatalf("evict: %+v %v", ev, err)
	}
	hb, err = k.Heartbeat(ctx, nil)
	if err != nil || len(hb.Evicted) != 1 || hb.Evicted[0].Shape != "s2" || hb.Evicted[0].Reason != "manual" {
		t.Errorf("heartbeat after the eviction: %+v %v", hb, err)
	}
	_, err = k.Ack(ctx, map[string]ledger.LSN{"s2": 0x10})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 410 || ce.Code != wire.CodeShapeGone || ce.Reason != "manual" {
		t.Errorf("ack naming only the evicted shape: %v, want 410 shape_gone (manual)", err)
	}
	res, err := k.Ack(ctx, map[string]ledger.LSN{"s2": 0x10, "s1": 0})
	if err != nil || res.Gone["s2"] != "manual" || len(res.Gone) != 1 {
		t.Errorf("ack naming an evicted and a live shape: %+v %v, want 200 with s2 in gone", res, err)
	}
	if status, we := e.raw("GET", "/v1/shapes/s2", "", "Bearer "+token, ""); status != 410 || we.Reason != "manual" {
		t.Errorf("GET evicted shape: %d %+v", status, we)
	}
	// Read-only views answer.
	for _, p := range []string{"/v1/status", "/v1/shapes", "/v1/shapes?holding=1", "/v1/shapes/s1", "/v1/consumers",
		"/v1/evictions", "/v1/events?since=0", "/healthz", "/readyz"} {
		if status, _ := e.raw("GET", p, "", "Bearer "+token, ""); status != 200 {
			t.Errorf("GET %s: %d", p, status)
		}
	}
	// Delete the shape, then release the consumer: its lease is gone.
	if err := k.DeleteShape(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := k.Release(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = k.Heartbeat(ctx, nil)
	if !client.IsGone(err) && !client.IsCode(err, wire.CodeWrongLease) {
		t.Errorf("heartbeat after release: %v, want 410 or 403", err)
	}
	// The id can be registered again at once.
	e.register("c1")
}

func TestStreamResendAndDurableAck(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k := e.register("c1")
	if _, err := k.PutShape(ctx, "s1", "public.orders", nil); err != nil {
		t.Fatal(err)
	}
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := e.l.Consumer("c1"); !c.Streaming {
		t.Error("an open stream does not hold the lease")
	}
	for i := range 3 {
		e.feed(ledger.LSN(0x100*(i+1)), ins("public.orders", "id", fmt.Sprint(i)))
	}
	for i := range 3 {
		if txn := nextTxn(t, s); txn.LSN != ledger.LSN(0x100*(i+1)) {
			t.Fatalf("txn %d at %s", i, txn.LSN)
		}
	}
	res, err := k.Ack(ctx, map[string]ledger.LSN{"s1": 0x100})
	if err != nil {
		t.Fatal(err)
	}
	// 200 means durable: the flush position the answer gives is committed.
	if flush, _ := ledger.ParseLSN(res.FlushLSN); flush > 0x200 {
		t.Errorf("flush %s passed an unacked transaction", flush)
	}
	s.Close()
	s, err = k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, want := range []ledger.LSN{0x200, 0x300} {
		if txn := nextTxn(t, s); txn.LSN != want {
			t.Fatalf("after reconnect got %s, want %s", txn.LSN, want)
		}
	}
	if _, err := k.AckAll(ctx, 0x300); err != nil {
		t.Fatal(err)
	}
	if got := e.l.SafeLSN(); got != 0x310 {
		t.Errorf("safe %s after acking everything, want 0/310", got)
	}
	status, _ := e.raw("GET", "/metrics", "", "Bearer "+token, "")
	if status != 200 {
		t.Errorf("metrics: %d", status)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k := e.register("c1")
	if _, err := k.PutShape(ctx, "s1", "public.orders", nil); err != nil {
		t.Fatal(err)
	}
	e.feed(0x100, ins("public.orders", "id", "1"))
	req, _ := http.NewRequest("GET", e.srv.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	text := string(b)
	for _, want := range []string{
		"ledgerd_safe_flush_lsn 256", "ledgerd_reported_flush_lsn", `ledgerd_shapes{state="tracked"} 1`,
		`ledgerd_shapes{state="pending"} 1`, `ledgerd_consumers{state="live"} 1`, "ledgerd_pending_shapes 1",
		"ledgerd_oldest_pending_age_seconds", "ledgerd_acks_total 0", "ledgerd_deliveries_total 0",
		"ledgerd_outbox_bytes", "ledgerd_stream_reconnects_total 0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestSnapshot(t *testing.T) {
	e := newEnv(t)
	e.register("c1")
	req, _ := http.NewRequest("GET", e.srv.URL+"/v1/debug/snapshot", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	path := t.TempDir() + "/snap.db"
	b, _ := io.ReadAll(resp.Body)
	if err := writeFile(path, b); err != nil {
		t.Fatal(err)
	}
	st, err := ledger.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Consumers) != 1 || st.Consumers[0].ID != "c1" {
		t.Errorf("snapshot consumers %+v", st.Consumers)
	}
}
