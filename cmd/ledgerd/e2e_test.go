package main_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// event is one change as a shape saw it.
type event struct {
	LSN   ledger.LSN
	Op    string
	Table string
	ID    string
}

func (e event) key() string { return e.Op + " " + e.Table + " " + e.ID }

// recorder collects what a consumer's shapes received.
type recorder struct {
	mu      sync.Mutex
	events  map[string][]event      // by shape, in arrival order
	txns    map[string][]ledger.LSN // by shape: commit LSNs of the txns received
	lastEnd ledger.LSN
	acked   ledger.LSN // highest flush position an ack answer reported
}

func newRecorder() *recorder {
	return &recorder{events: map[string][]event{}, txns: map[string][]ledger.LSN{}}
}

func (r *recorder) handle(_ context.Context, txn *client.Txn) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, ch := range txn.Changes {
		row := ch.New
		if ch.Op == "delete" {
			row = ch.Old
		}
		id := ""
		if v := row["id"]; v != nil {
			id = *v
		}
		for _, sh := range ch.Shapes {
			r.events[sh] = append(r.events[sh], event{LSN: txn.LSN, Op: ch.Op, Table: ch.Table, ID: id})
			if !seen[sh] {
				seen[sh] = true
				r.txns[sh] = append(r.txns[sh], txn.LSN)
			}
		}
	}
	r.lastEnd = max(r.lastEnd, txn.EndLSN)
	return nil
}

func (r *recorder) count(shape string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events[shape])
}

type shapeDef struct {
	table  string
	filter map[string][]string
}

// runConsumer registers a consumer, creates its shapes and runs it with
// client.Run until the test ends or stop is called.
func runConsumer(t *testing.T, d *daemon, id string, shapes map[string]shapeDef) (*recorder, func()) {
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
	rec := newRecorder()
	done := make(chan error, 1)
	go func() {
		done <- k.Run(ctx, rec.handle, client.RunOptions{
			OnAck: func(_ map[string]ledger.LSN, flush ledger.LSN) {
				rec.mu.Lock()
				rec.acked = max(rec.acked, flush)
				rec.mu.Unlock()
			},
		})
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("consumer %s: %v", id, err)
			}
		})
	}
	t.Cleanup(stop)
	return rec, stop
}

var (
	tenants = []string{"a", "b", "c"}
	regions = []string{"eu", "us"}
)

// TestRoutingEndToEnd: rows inserted, updated and deleted across several
// tables reach exactly the shapes whose table and filter match (deletes,
// whose old row is only the key under the default replica identity, reach
// every shape on the table), in commit order, each transaction once; after the acks the slot's confirmed flush
// reaches the last transaction, and untracked tables do not hold it.
func TestRoutingEndToEnd(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn,
		// Replica identity DEFAULT: deletes carry only the primary key.
		"CREATE TABLE orders (id int PRIMARY KEY, tenant text, region text, note text)",
		"CREATE TABLE items (id int PRIMARY KEY, name text)",
		"CREATE TABLE audit (id serial PRIMARY KEY, msg text)",
	)
	d := startDaemon(t, dsn, slot, "")

	shapes := map[string]map[string]shapeDef{
		"c1": {"o-a": {"public.orders", map[string][]string{"tenant": {"a"}}}, "items": {"public.items", nil}},
		"c2": {"o-beu": {"public.orders", map[string][]string{"tenant": {"b"}, "region": {"eu"}}}, "o-all": {"orders", nil}},
		"c3": {"o-cus": {"public.orders", map[string][]string{"tenant": {"c", "x"}, "region": {"us"}}}},
	}
	recs := map[string]*recorder{}
	for id, sh := range shapes {
		recs[id], _ = runConsumer(t, d, id, sh)
	}
	owner := map[string]string{}
	for c, sh := range shapes {
		for id := range sh {
			owner[id] = c
		}
	}
	// The model: what each shape must get, in order.
	type row struct{ tenant, region string }
	rows := map[int]row{}
	want := map[string][]string{}
	matchOrders := func(op string, id int, r row) {
		want["o-all"] = append(want["o-all"], fmt.Sprintf("%s public.orders %d", op, id))
		if r.tenant == "a" {
			want["o-a"] = append(want["o-a"], fmt.Sprintf("%s public.orders %d", op, id))
		}
		if r.tenant == "b" && r.region == "eu" {
			want["o-beu"] = append(want["o-beu"], fmt.Sprintf("%s public.orders %d", op, id))
		}
		if r.tenant == "c" && r.region == "us" {
			want["o-cus"] = append(want["o-cus"], fmt.Sprintf("%s public.orders %d", op, id))
		}
	}
	var stmts []string
	for i := range 90 {
		switch i % 6 {
		case 0:
			r := row{tenants[i/6%3], regions[i/18%2]}
			rows[i] = r
			stmts = append(stmts, fmt.Sprintf("INSERT INTO orders VALUES (%d, '%s', '%s', 'new')", i, r.tenant, r.region))
			matchOrders("insert", i, r)
		case 1:
			stmts = append(stmts, fmt.Sprintf("INSERT INTO items VALUES (%d, 'item %d')", i, i))
			want["items"] = append(want["items"], fmt.Sprintf("insert public.items %d", i))
		case 2:
			id := i - 2
			stmts = append(stmts, fmt.Sprintf("UPDATE orders SET note = 'changed' WHERE id = %d", id))
			matchOrders("update", id, rows[id])
		case 3:
			stmts = append(stmts, fmt.Sprintf("INSERT INTO audit (msg) VALUES ('untracked %d')", i))
		case 4:
			r := row{tenants[(i/6+1)%3], regions[(i/6)%2]}
			rows[i] = r
			stmts = append(stmts, fmt.Sprintf("BEGIN; INSERT INTO orders VALUES (%d, '%s', '%s', 'multi'); INSERT INTO items VALUES (%d, 'x'); INSERT INTO audit (msg) VALUES ('x'); COMMIT", i, r.tenant, r.region, i))
			matchOrders("insert", i, r)
			want["items"] = append(want["items"], fmt.Sprintf("insert public.items %d", i))
		case 5:
			id := i - 5
			stmts = append(stmts, fmt.Sprintf("DELETE FROM orders WHERE id = %d", id))
			// The delete's old row is the key alone: no filter can rule it
			// out, so it reaches every shape on orders (over-delivery).
			matchOrders("delete", id, rows[id])
			for _, sh := range []string{"o-a", "o-beu", "o-cus"} {
				if w := want[sh]; len(w) == 0 || w[len(w)-1] != fmt.Sprintf("delete public.orders %d", id) {
					want[sh] = append(want[sh], fmt.Sprintf("delete public.orders %d", id))
				}
			}
			delete(rows, id)
		}
	}
	// TRUNCATE reaches every shape on the table, filters or not.
	stmts = append(stmts, "TRUNCATE items", "TRUNCATE orders, audit")
	want["items"] = append(want["items"], "truncate public.items ")
	for _, sh := range []string{"o-a", "o-beu", "o-all", "o-cus"} {
		want[sh] = append(want[sh], "truncate public.orders ")
	}
	sql(t, dsn, stmts...)

	for shape, w := range want {
		rec := recs[owner[shape]]
		waitFor(t, fmt.Sprintf("shape %s to receive %d changes", shape, len(w)), 60*time.Second,
			func() bool { return rec.count(shape) >= len(w) })
	}
	// Give stray deliveries a chance to show up before comparing.
	time.Sleep(500 * time.Millisecond)
	var lastEnd ledger.LSN
	for c, rec := range recs {
		rec.mu.Lock()
		for shape := range shapes[c] {
			var got []string
			for _, e := range rec.events[shape] {
				got = append(got, e.key())
			}
			if !slices.Equal(got, want[shape]) {
				t.Errorf("shape %s got\n  %v\nwant\n  %v", shape, got, want[shape])
			}
			txns := rec.txns[shape]
			if !slices.IsSorted(txns) || len(slices.Compact(slices.Clone(txns))) != len(txns) {
				t.Errorf("shape %s: transactions out of commit order or repeated: %v", shape, txns)
			}
		}
		lastEnd = max(lastEnd, rec.lastEnd)
		rec.mu.Unlock()
	}

	// After the acks the slot is confirmed at (or, idle, past) the last transaction.
	waitFor(t, "confirmed_flush_lsn to reach the last transaction "+lastEnd.String(), 30*time.Second,
		func() bool { return confirmedFlush(t, dsn, slot) >= lastEnd })
	cur := queryLSN(t, dsn, "SELECT pg_current_wal_lsn()::text")
	if cf := confirmedFlush(t, dsn, slot); cf > cur {
		t.Errorf("confirmed_flush_lsn %s is past the server's WAL end %s", cf, cur)
	}
	// Untracked tables do not hold the slot.
	sql(t, dsn, "INSERT INTO audit (msg) SELECT 'bulk ' || g FROM generate_series(1, 500) g", "INSERT INTO audit (msg) VALUES ('last')")
	end := queryLSN(t, dsn, "SELECT pg_current_wal_lsn()::text")
	waitFor(t, "confirmed_flush_lsn to pass untracked transactions up to "+end.String(), 30*time.Second,
		func() bool { return confirmedFlush(t, dsn, slot) >= end })
	for c, rec := range recs {
		for shape := range shapes[c] {
			if n := rec.count(shape); n != len(want[shape]) {
				t.Errorf("shape %s got %d changes after untracked traffic, want %d", shape, n, len(want[shape]))
			}
		}
	}
	var st wire.Status
	if _, err := d.c.Do(context.Background(), "GET", "/v1/status", "", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Counts.Shapes != 5 || st.Counts.ShapesPending != 0 || st.ConfirmedFlushLSN == "" {
		t.Errorf("status %+v", st)
	}
}

// TestReconnectRedelivers: a consumer that disconnects and reconnects within
// its lease gets every unacked transaction again and nothing it acked.
func TestReconnectRedelivers(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	d := startDaemon(t, dsn, slot, "")
	ctx := context.Background()
	k := registerShape(t, d, "c", 30*time.Second, "s", "public.t", nil)
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var stmts []string
	for i := range 10 {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO t VALUES (%d, 'v')", i))
	}
	sql(t, dsn, stmts...)
	read := func(s *client.Stream, n int) []ledger.LSN {
		t.Helper()
		var out []ledger.LSN
		for len(out) < n {
			_, txn, err := s.Next()
			if err != nil {
				t.Fatal(err)
			}
			if txn != nil {
				out = append(out, txn.LSN)
			}
		}
		return out
	}
	first := read(s, 10)
	if _, err := k.Ack(ctx, map[string]ledger.LSN{"s": first[3]}); err != nil {
		t.Fatal(err)
	}
	s.Close() // disconnect

	s, err = k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again := read(s, 6)
	if !slices.Equal(again, first[4:]) {
		t.Errorf("after reconnect got %v, want the unacked %v", again, first[4:])
	}
	// Nothing more is pending: new rows come next, not old ones.
	sql(t, dsn, "INSERT INTO t VALUES (100, 'new')")
	if next := read(s, 1); next[0] <= first[9] {
		t.Errorf("after the resend got %s, want the new transaction", next[0])
	}
	s.Close()
	// Acked ones stay acked across a daemon restart too (I2).
	if _, err := k.Ack(ctx, map[string]ledger.LSN{"s": first[6]}); err != nil {
		t.Fatal(err)
	}
	if took := d.stop(); took > 5*time.Second {
		t.Errorf("SIGTERM took %v", took)
	}
	startDaemonOn(t, d.addr, dsn, slot, d.dbPath)
	s, err = k.OpenStream(ctx) // same lease: leases survive a restart (I5)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := read(s, 4)
	want := append(slices.Clone(first[7:]), 0)
	if !slices.Equal(got[:3], want[:3]) || got[3] <= first[9] {
		t.Errorf("after a daemon restart got %v, want %v then the new transaction", got, first[7:])
	}
}

// TestSlowConsumerBackpressure: a consumer that stops reading fills its
// outbox; the daemon waits for it up to the slow-consumer timeout, then
// closes its stream and keeps serving others, holding no more than the
// outbox in memory. When it comes back it gets everything, in order.
func TestSlowConsumerBackpressure(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY, pad text)")
	const outbox = 64 << 10
	d := startDaemon(t, dsn, slot, "", "-outbox-bytes", "64KiB", "-slow-consumer-timeout", "2s")
	ctx := context.Background()
	fast, _ := runConsumer(t, d, "fast", map[string]shapeDef{"f": {"public.t", nil}})
	slow := registerShape(t, d, "slow", 60*time.Second, "s", "public.t", nil)
	stalled, err := slow.OpenStream(ctx) // opened and never read
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	const n = 400
	var stmts []string
	for i := range n {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO t VALUES (%d, repeat('x', 2000))", i))
	}
	sql(t, dsn, stmts...)
	waitFor(t, "the fast consumer to get every row", 90*time.Second, func() bool { return fast.count("f") == n })

	metrics := scrape(t, d)
	if v := metrics["ledgerd_slow_consumer_closes_total"]; v < 1 {
		t.Errorf("slow_consumer_closes_total = %v, want >= 1", v)
	}
	// Each outbox stays within its bound (plus the one transaction that
	// found it empty), whatever the slow consumer does.
	const perTxn = 4 << 10
	if v := metrics["ledgerd_outbox_bytes"]; v > 2*(outbox+perTxn) {
		t.Errorf("outboxes hold %v bytes, over twice the %d limit: memory is not bounded", v, outbox)
	}
	var views []wire.Consumer
	if _, err := d.c.Do(ctx, "GET", "/v1/consumers", "", nil, &views); err != nil {
		t.Fatal(err)
	}
	for _, v := range views {
		if v.OutboxBytes > outbox+perTxn {
			t.Errorf("consumer %s outbox holds %d bytes, over the %d limit", v.ID, v.OutboxBytes, outbox)
		}
		if v.ID == "slow" && !v.Overflowed {
			t.Errorf("slow consumer's outbox is not marked overflowed: %+v", v)
		}
	}
	// The slot is held at the slow consumer's first unacked transaction.
	if cf := confirmedFlush(t, dsn, slot); cf >= fast.lastEnd {
		t.Errorf("confirmed flush %s passed transactions the slow consumer never acked", cf)
	}

	// It comes back and reads properly: everything arrives, in order, once.
	stalled.Close()
	rec := newRecorder()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- slow.Run(rctx, rec.handle, client.RunOptions{}) }()
	waitFor(t, "the slow consumer to catch up", 90*time.Second, func() bool { return rec.count("s") >= n })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	var ids []string
	for _, e := range rec.events["s"] {
		ids = append(ids, e.ID)
	}
	txns := rec.txns["s"]
	rec.mu.Unlock()
	if !slices.IsSorted(txns) || len(slices.Compact(slices.Clone(txns))) != n {
		t.Errorf("slow consumer got %d transactions (%d distinct, sorted %v), want %d once each in order",
			len(txns), len(slices.Compact(slices.Clone(txns))), slices.IsSorted(txns), n)
	}
	for i, id := range ids[:min(n, len(ids))] {
		if id != fmt.Sprint(i) {
			t.Fatalf("slow consumer change %d is row %s", i, id)
		}
	}
	waitFor(t, "the slot to move past every row", 30*time.Second, func() bool { return confirmedFlush(t, dsn, slot) >= fast.lastEnd })
}

// scrape reads /metrics into name -> value (unlabelled series only).
func scrape(t *testing.T, d *daemon) map[string]float64 {
	t.Helper()
	var text string
	req, _ := newAuthRequest("GET", d.url+"/metrics", "")
	resp, err := d.httpDo(req)
	if err != nil {
		t.Fatal(err)
	}
	text = resp
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var name string
		var v float64
		if _, err := fmt.Sscanf(line, "%s %g", &name, &v); err == nil {
			out[name] = v
		}
	}
	return out
}

// TestBadInputEndToEnd sends the bad-input table to the real daemon, then
// checks that it still streams and acks.
func TestBadInputEndToEnd(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY, tenant text)", "CREATE TABLE u (id int PRIMARY KEY)")
	d := startDaemon(t, dsn, slot, "")
	ctx := context.Background()
	k := registerShape(t, d, "c", 30*time.Second, "s", "public.t", map[string][]string{"tenant": {"a"}})
	stale, err := d.c.Register(ctx, client.ConsumerConfig{ID: "gone", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := stale.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.Register(ctx, client.ConsumerConfig{ID: "gone", TTL: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	L := k.Lease()
	bearer := "Bearer " + testToken
	big := `{"id":"` + strings.Repeat("y", 2<<20) + `"}`
	tests := []struct {
		name, method, path, lease, auth, body string
		status                                int
		code                                  string
	}{
		{"malformed JSON", "POST", "/v1/consumers", "", bearer, `{"id":`, 400, wire.CodeMalformedJSON},
		{"unknown field", "PUT", "/v1/shapes/s2", L, bearer, `{"consumer":"c","table":"public.t","tenant":"a"}`, 400, wire.CodeUnknownField},
		{"malformed LSN", "POST", "/v1/consumers/c/ack", L, bearer, `{"acks":{"s":"0-1"}}`, 400, wire.CodeMalformedLSN},
		{"missing lease", "POST", "/v1/consumers/c/ack", "", bearer, `{"lsn":"0/1"}`, 403, wire.CodeWrongLease},
		{"wrong lease", "GET", "/v1/consumers/c/stream", "wrong", bearer, ``, 403, wire.CodeWrongLease},
		{"stale lease", "POST", "/v1/consumers/gone/heartbeat", stale.Lease(), bearer, `{}`, 403, wire.CodeWrongLease},
		{"missing bearer token", "GET", "/v1/status", "", "", ``, 401, wire.CodeUnauthorized},
		{"unknown consumer", "POST", "/v1/consumers/nobody/heartbeat", "x", bearer, `{}`, 404, wire.CodeConsumerNotFound},
		{"unknown shape", "GET", "/v1/shapes/nope", "", bearer, ``, 404, wire.CodeShapeNotFound},
		{"duplicate consumer", "POST", "/v1/consumers", "", bearer, `{"id":"c","ttl_ms":5000}`, 409, wire.CodeConsumerExists},
		{"conflicting shape", "PUT", "/v1/shapes/s", L, bearer, `{"consumer":"c","table":"public.u"}`, 409, wire.CodeShapeConflict},
		{"unknown table", "PUT", "/v1/shapes/s2", L, bearer, `{"consumer":"c","table":"public.nope"}`, 422, wire.CodeUnknownTable},
		{"ack past what was delivered", "POST", "/v1/consumers/c/ack", L, bearer, `{"acks":{"s":"F/0"}}`, 400, wire.CodeAckBeyondDelivered},
		{"2 MiB body", "POST", "/v1/consumers", "", bearer, big, 413, wire.CodeBodyTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := newAuthRequest(tc.method, d.url+tc.path, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Del("Authorization")
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			if tc.lease != "" {
				req.Header.Set(wire.HeaderLease, tc.lease)
			}
			status, we := d.doError(t, req)
			if status != tc.status || we.Code != tc.code {
				t.Errorf("got %d %q (%s), want %d %q", status, we.Code, we.Message, tc.status, tc.code)
			}
		})
	}
	// Still streams and acks.
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sql(t, dsn, "INSERT INTO t VALUES (1, 'b')", "INSERT INTO t VALUES (2, 'a')")
	var txn *client.Txn
	for txn == nil {
		if _, txn, err = s.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if v := txn.Changes[0].New["id"]; v == nil || *v != "2" {
		t.Errorf("first delivered row %+v, want id 2 (tenant a)", txn.Changes[0].New)
	}
	if _, err := k.Ack(ctx, map[string]ledger.LSN{"s": txn.LSN}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slot to move past the acked row", 30*time.Second, func() bool { return confirmedFlush(t, dsn, slot) >= txn.EndLSN })
}

// TestSIGTERMConfirmsLastAck: SIGTERM exits within 5 s, and the slot's
// confirmed position is the last acked one even with a long status interval
// (the drain sends a final status update).
func TestSIGTERMConfirmsLastAck(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY)")
	// On a unix socket, as a sidecar in the same pod would reach it.
	d := startDaemonOn(t, "unix:"+filepath.Join(t.TempDir(), "ledgerd.sock"), dsn, slot, "", "-status-interval", "30s")
	ctx := context.Background()
	k := registerShape(t, d, "c", 30*time.Second, "s", "public.t", nil)
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sql(t, dsn, "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (3)")
	var got []*client.Txn
	for len(got) < 3 {
		_, txn, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if txn != nil {
			got = append(got, txn)
		}
	}
	before := confirmedFlush(t, dsn, slot)
	if _, err := k.Ack(ctx, map[string]ledger.LSN{"s": got[2].LSN}); err != nil {
		t.Fatal(err)
	}
	took := d.stop()
	if took > 5*time.Second {
		t.Errorf("SIGTERM took %v, want under 5s", took)
	}
	// The walsender reads the final status update on its own time, possibly
	// after ledgerd has exited: wait for it rather than read once.
	var cf ledger.LSN
	deadline := time.Now().Add(10 * time.Second)
	for cf = confirmedFlush(t, dsn, slot); cf < got[2].EndLSN && time.Now().Before(deadline); cf = confirmedFlush(t, dsn, slot) {
		time.Sleep(20 * time.Millisecond)
	}
	if cf < got[2].EndLSN {
		t.Errorf("after SIGTERM confirmed_flush_lsn is %s (was %s), want the last acked transaction's end %s", cf, before, got[2].EndLSN)
	}
	if !strings.Contains(d.logText(), "ledgerd stopped") {
		t.Error("no clean-stop log line")
	}
	// The ledger file was closed cleanly and is consistent.
	problems, err := ledger.Verify(d.dbPath)
	if err != nil || len(problems) > 0 {
		t.Errorf("verify after SIGTERM: %v %v", problems, err)
	}
	st, err := ledger.Load(d.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Meta.CleanShutdown.IsZero() {
		t.Error("no clean-shutdown marker in the ledger")
	}
	sort.Slice(st.Shapes, func(i, j int) bool { return st.Shapes[i].ID < st.Shapes[j].ID })
	if len(st.Shapes) != 1 || st.Shapes[0].FlushedLSN != got[2].LSN {
		t.Errorf("ledger shapes after SIGTERM: %+v", st.Shapes)
	}

}

// TestKillNineLosesNothing: SIGKILL at any instant loses nothing (I1) and
// redelivers nothing acked (I2); rows committed while ledgerd is down arrive
// after it restarts, and the slot never passes an unacked transaction.
func TestKillNineLosesNothing(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY)")
	d := startDaemon(t, dsn, slot, "")
	ctx := context.Background()
	k := registerShape(t, d, "c", 60*time.Second, "s", "public.t", nil)
	read := func(s *client.Stream, n int) []*client.Txn {
		t.Helper()
		var out []*client.Txn
		for len(out) < n {
			_, txn, err := s.Next()
			if err != nil {
				t.Fatal(err)
			}
			if txn != nil {
				out = append(out, txn)
			}
		}
		return out
	}
	ids := func(txns []*client.Txn) []string {
		var out []string
		for _, x := range txns {
			out = append(out, *x.Changes[0].New["id"])
		}
		return out
	}
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var stmts []string
	for i := range 10 {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
	}
	sql(t, dsn, stmts...)
	first := read(s, 10)
	if _, err := k.Ack(ctx, map[string]ledger.LSN{"s": first[4].LSN}); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	s.Close()
	if cf := confirmedFlush(t, dsn, slot); cf > first[5].LSN {
		t.Errorf("confirmed flush %s passed the first unacked transaction %s", cf, first[5].LSN)
	}
	sql(t, dsn, "INSERT INTO t VALUES (100)", "INSERT INTO t VALUES (101)") // while ledgerd is down

	startDaemonOn(t, d.addr, dsn, slot, d.dbPath)
	s, err = k.OpenStream(ctx) // the lease survived the crash (I5)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := ids(read(s, 7))
	want := []string{"5", "6", "7", "8", "9", "100", "101"}
	if !slices.Equal(got, want) {
		t.Errorf("after SIGKILL and restart got rows %v, want %v (every unacked one, nothing acked)", got, want)
	}
}

// TestDeadConsumerEvicted is I3 against the real binary: a consumer with a
// short lease receives a transaction and dies without acking it (its stream
// drops, its heartbeats stop). The reconciler ends it as lease_expired, the
// slot's confirmed flush moves past the transaction it pinned, and the dead
// consumer's next heartbeat gets 410 lease_gone. A healthy consumer on the
// same table keeps working.
func TestDeadConsumerEvicted(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	d := startDaemon(t, dsn, slot, "", "-reconcile-interval", "200ms")
	ctx := context.Background()
	rec, _ := runConsumer(t, d, "healthy", map[string]shapeDef{"h": {"public.t", nil}})

	k := registerShape(t, d, "doomed", time.Second, "d", "public.t", nil)
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sql(t, dsn, "INSERT INTO t VALUES (1, 'pinned')")
	var pinned ledger.LSN
	for pinned == 0 {
		_, txn, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if txn != nil {
			pinned = txn.LSN
		}
	}
	waitFor(t, "the healthy consumer to ack the transaction", 30*time.Second, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.acked > 0 && len(rec.txns["h"]) > 0
	})
	if got := confirmedFlush(t, dsn, slot); got > pinned {
		t.Fatalf("confirmed flush %s passed the unacked transaction %s while its consumer lived", got, pinned)
	}
	s.Close() // killed: no ack, no more heartbeats
	killed := time.Now()

	var ts wire.Tombstone
	waitFor(t, "the dead consumer's shape to be evicted", 30*time.Second, func() bool {
		var out []wire.Tombstone
		if _, err := d.c.Do(ctx, "GET", "/v1/evictions", "", nil, &out); err != nil {
			t.Fatal(err)
		}
		for _, x := range out {
			if x.Shape == "d" {
				ts = x
				return true
			}
		}
		return false
	})
	if ts.Reason != string(ledger.ReasonLeaseExpired) || ts.Actor != "reconciler" || ts.Consumer != "doomed" ||
		!strings.Contains(ts.Evidence, "last heartbeat") || !strings.Contains(ts.Evidence, "ttl 1s") {
		t.Errorf("tombstone %+v, want lease_expired by the reconciler with the lease timing as evidence", ts)
	}
	t.Logf("evicted %v after the kill (ttl 1s, reconcile interval 200ms)", time.Since(killed).Round(time.Millisecond))
	waitFor(t, "the confirmed flush to move past the dead consumer's transaction", 30*time.Second, func() bool {
		return confirmedFlush(t, dsn, slot) > pinned
	})
	_, err = k.Heartbeat(ctx, nil)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 410 || ce.Code != wire.CodeLeaseGone || ce.Reason != string(ledger.ReasonLeaseExpired) {
		t.Fatalf("heartbeat of the dead consumer: %v, want 410 lease_gone (lease_expired)", err)
	}
	// The healthy consumer is untouched and still gets new transactions.
	before := rec.count("h")
	sql(t, dsn, "INSERT INTO t VALUES (2, 'after')")
	waitFor(t, "the healthy consumer to get the next transaction", 30*time.Second, func() bool { return rec.count("h") > before })
	m := scrape(t, d)
	if m[`ledgerd_reconcile_evictions_total{reason="lease_expired"}`] != 1 {
		t.Errorf("lease_expired evictions metric = %v, want 1", m[`ledgerd_reconcile_evictions_total{reason="lease_expired"}`])
	}
	// The slot audit reads the real slot: up, a restart LSN, the
	// walsender's pid, and safe_wal_size (-1: max_slot_wal_keep_size unset).
	for _, name := range []string{"ledgerd_slot_audit_up", "ledgerd_slot_audit_restart_lsn", "ledgerd_slot_audit_active_pid",
		"ledgerd_slot_audit_confirmed_flush_lsn", `ledgerd_slot_audit_wal_status{status="reserved"}`} {
		if m[name] <= 0 {
			t.Errorf("%s = %v, want > 0", name, m[name])
		}
	}
	if v, ok := m["ledgerd_slot_audit_safe_wal_size_bytes"]; !ok || v == 0 {
		t.Errorf("ledgerd_slot_audit_safe_wal_size_bytes = %v (%v), want a size or -1", v, ok)
	}
	if m["ledgerd_reconcile_breaker_tripped"] != 0 || m["ledgerd_reconcile_passes_total"] < 2 {
		t.Errorf("breaker tripped %v, passes %v", m["ledgerd_reconcile_breaker_tripped"], m["ledgerd_reconcile_passes_total"])
	}
}
