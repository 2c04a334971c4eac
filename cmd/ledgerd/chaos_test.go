package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestChaos runs the real ledgerd under a continuous write load and a loop
// of faults: SIGKILL of ledgerd (restarted on the same ledger file and
// slot), a Postgres crash (immediate stop, then crash recovery), a consumer
// whose connections are cut, and a consumer process that dies without its
// last ack. One writer transaction in about 15 is large (hundreds of rows,
// many -fragment-bytes parts). Throughout, the slot's confirmed_flush_lsn never goes backwards
// except across a Postgres crash, and never passes a transaction a shape
// received and has not acked (I1, I6). At the end every committed change is
// delivered to every shape it matches (I1), nothing a shape had durably
// acked was sent to it again (I2), each connection delivered in commit
// order, the slot reaches the last transaction, and the ledger file
// verifies clean after SIGTERM.
//
// LEDGERD_CHAOS=1 runs many more rounds; LEDGERD_SEED replays the same
// choices of faults, targets and moments (timings still vary).
func TestChaos(t *testing.T) {
	rounds := 6
	if os.Getenv("LEDGERD_CHAOS") == "1" {
		rounds = 40
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LEDGERD_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LEDGERD_SEED=%q: want an unsigned integer", s)
		}
		seed = v
	}
	t.Logf("seed %d (replay with LEDGERD_SEED=%d), %d rounds", seed, seed, rounds)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	began := time.Now()

	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn,
		// Replica identity DEFAULT: deletes carry only the id, not the tenant.
		"CREATE TABLE orders (id bigint PRIMARY KEY, tenant text NOT NULL, v bigint NOT NULL)",
		"CREATE TABLE items (id bigint PRIMARY KEY, v bigint NOT NULL)",
		"CREATE TABLE txlog (k bigint PRIMARY KEY)", // no shape: resolves commits whose outcome was lost
	)
	// The cluster is the package's: whatever happens here, leave it running.
	pg := &pgFaults{}
	t.Cleanup(func() {
		if pg.down.Load() {
			if err := cluster.Restart(); err != nil {
				t.Errorf("restarting the package's Postgres after the test: %v", err)
			}
		}
	})

	// Small outboxes and a short slow-consumer timeout: a consumer that
	// falls behind overflows, and the dropped transactions come back by a
	// replay from the slot, in the middle of the crashes. Small fragments:
	// the writer's large transactions come in many parts, more than an
	// outbox holds.
	flags := []string{"-outbox-bytes", "8KiB", "-slow-consumer-timeout", "300ms", "-fragment-bytes", "1KiB"}
	d := startDaemon(t, dsn, slot, "", flags...)
	addr, dbPath := d.addr, d.dbPath
	daemons := []*daemon{d}

	defs := []chaosShapes{
		{"c1", map[string]shapeDef{
			"c1-orders-a": {"public.orders", map[string][]string{"tenant": {"a"}}},
			"c1-items":    {"public.items", nil},
		}},
		{"c2", map[string]shapeDef{
			"c2-orders": {"public.orders", nil},
		}},
		{"c3", map[string]shapeDef{
			"c3-orders-bc": {"public.orders", map[string][]string{"tenant": {"b", "c"}}},
			"c3-items":     {"public.items", nil},
		}},
	}
	var consumers []*chaosConsumer
	for _, def := range defs {
		consumers = append(consumers, newChaosConsumer(t, d.url, def, rand.New(rand.NewPCG(seed+2+uint64(len(consumers)), seed))))
	}
	defer func() {
		for _, c := range consumers {
			c.stop()
		}
	}()

	w := &chaosWriter{dsn: dsn, rng: rand.New(rand.NewPCG(seed+1, seed^0xda942042e4dd58b5))}
	wctx, stopWriter := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); w.run(wctx) }()
	defer func() { stopWriter(); <-writerDone }()

	pollCtx, stopPoll := context.WithCancel(context.Background())
	poller := &flushPoller{dsn: dsn, slot: slot, pg: pg, consumers: consumers}
	pollDone := make(chan struct{})
	go func() { defer close(pollDone); poller.run(pollCtx) }()
	defer func() { stopPoll(); <-pollDone }()

	// progress waits until every consumer has handled new transactions: the
	// whole chain works again after a fault.
	progress := func(what string) {
		t.Helper()
		before := make([]int, len(consumers))
		for i, c := range consumers {
			before[i] = c.handled()
		}
		waitFor(t, "every consumer to receive new transactions "+what, 90*time.Second, func() bool {
			for i, c := range consumers {
				if c.handled() < before[i]+15 {
					return false
				}
			}
			return true
		})
	}
	progress("before the first fault")

	kinds := []string{"kill-ledgerd", "crash-postgres", "crash-both", "cut-consumer", "restart-consumer"}
	order := slices.Clone(kinds)
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	counts := map[string]int{}
	for round := range rounds {
		kind := kinds[rng.IntN(len(kinds))]
		if round < len(order) {
			kind = order[round] // every kind at least once, even in a short run
		}
		counts[kind]++
		// A random moment within the traffic, so faults land mid-transaction,
		// mid-ack and mid-status-update alike.
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		switch kind {
		case "kill-ledgerd":
			if err := d.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			<-d.done
			d = startDaemonOn(t, addr, dsn, slot, dbPath, flags...)
			daemons = append(daemons, d)
		case "crash-postgres":
			pg.crash(t, nil)
		case "crash-both": // a host going down: ledgerd comes back to a slot that went back
			pg.crash(t, func() {
				if err := d.cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				<-d.done
			})
			d = startDaemonOn(t, addr, dsn, slot, dbPath, flags...)
			daemons = append(daemons, d)
		case "cut-consumer":
			consumers[rng.IntN(len(consumers))].cut()
		case "restart-consumer":
			consumers[rng.IntN(len(consumers))].restart(t)
		}
		// Now and then the next fault lands while the daemon is still
		// recovering from this one (catching up, replaying, reconnecting).
		if round < rounds-1 && rng.IntN(4) == 0 {
			t.Logf("round %d: %s, next fault at once", round+1, kind)
		} else {
			t.Logf("round %d: %s", round+1, kind)
			progress("after " + kind)
		}
		if err := poller.failure(); err != "" {
			t.Fatalf("after round %d (%s): %s", round+1, kind, err)
		}
	}

	// Drain: stop writing, then every committed change must arrive and be
	// acked, and the slot must reach the last transaction.
	stopWriter()
	<-writerDone
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	want := w.expected(defs)
	waitFor(t, "every committed change to reach its shapes", 120*time.Second, func() bool {
		for _, c := range consumers {
			if !c.hasAll(want) {
				return false
			}
		}
		return true
	})
	waitFor(t, "every received transaction to be acked", 60*time.Second, func() bool {
		for _, c := range consumers {
			if !c.allAcked() {
				return false
			}
		}
		return true
	})
	var lastEnd ledger.LSN
	for _, c := range consumers {
		lastEnd = max(lastEnd, c.lastEnd())
	}
	waitFor(t, "confirmed_flush_lsn to reach the last transaction's end "+lastEnd.String(), 60*time.Second, func() bool {
		return confirmedFlush(t, dsn, slot) >= lastEnd
	})
	stopPoll()
	<-pollDone
	if err := poller.failure(); err != "" {
		t.Error(err)
	}

	// What each shape received, against what was committed.
	durable := map[string]ledger.LSN{}
	for _, c := range consumers {
		c.stop()
		c.mu.Lock()
		for _, v := range c.violations {
			t.Error(v)
		}
		for sh := range c.def.shapes {
			durable[sh] = c.durable[sh]
			var missing, extra []string
			must := 0
			for k, m := range want[sh] {
				if m {
					must++
				}
				if m && !c.got[sh][k] {
					missing = append(missing, k)
				}
			}
			for k := range c.got[sh] {
				if _, ok := want[sh][k]; !ok {
					extra = append(extra, k)
				}
			}
			sort.Strings(missing)
			sort.Strings(extra)
			if len(missing) > 0 {
				t.Errorf("shape %s never received %d committed changes (I1): %v", sh, len(missing), firstFew(missing))
			}
			if len(extra) > 0 {
				t.Errorf("shape %s received %d changes it does not match or that were never committed: %v", sh, len(extra), firstFew(extra))
			}
			t.Logf("shape %s: %d changes (+%d leaving it), %d deliveries of %d transactions, acked %s", sh, must, len(want[sh])-must,
				c.deliveries[sh], len(c.lsns[sh]), c.durable[sh])
		}
		t.Logf("consumer %s: %d stream connections", c.def.id, c.gen)
		c.mu.Unlock()
	}

	// A clean stop leaves a consistent ledger holding every durable ack.
	d.stop()
	problems, err := ledger.Verify(dbPath)
	if err != nil || len(problems) > 0 {
		t.Errorf("verify after SIGTERM: %v %v", problems, err)
	}
	st, err := ledger.Load(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range st.Shapes {
		if sh.FlushedLSN < durable[sh.ID] {
			t.Errorf("shape %s: ledger flushed %s, behind the ack answered 200 at %s (I6)", sh.ID, sh.FlushedLSN, durable[sh.ID])
		}
		delete(durable, sh.ID)
	}
	for sh := range durable {
		t.Errorf("shape %s is no longer in the ledger (evicted: %v)", sh, st.Tombstones)
	}
	overflows, replays, cuts := 0, 0, 0
	for _, d := range daemons {
		overflows += strings.Count(d.logText(), "outbox full past the slow-consumer timeout")
		replays += strings.Count(d.logText(), "restarting the stream to replay from the slot")
		cuts += strings.Count(d.logText(), "change stream ended inside a transaction too large to keep")
	}
	t.Logf("%d rounds %v, %d writer transactions (%d with a lost outcome), %d flush samples, %d outbox overflows, %d replays from the slot, %d streams cut inside a large transaction, took %v",
		rounds, counts, w.committed, w.ambiguous, poller.samples.Load(), overflows, replays, cuts, time.Since(began).Round(time.Millisecond))
}

func firstFew(s []string) []string { return s[:min(len(s), 20)] }

// pgFaults crashes and restarts the package's Postgres; the flush poller
// compares two samples only when no crash happened between them.
type pgFaults struct {
	mu    sync.RWMutex // held for writing across a crash and restart
	epoch uint64
	down  atomic.Bool
}

// crash stops Postgres as a power loss would, runs also (if not nil) while
// it is down, and starts it again.
func (p *pgFaults) crash(t *testing.T, also func()) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down.Store(true)
	if err := cluster.Crash(); err != nil {
		t.Fatalf("crashing Postgres: %v", err)
	}
	if also != nil {
		also()
	}
	if err := cluster.Restart(); err != nil {
		t.Fatalf("restarting Postgres after a crash: %v", err)
	}
	p.down.Store(false)
	p.epoch++
}

// ---- writer ----

// chaosWriter commits numbered transactions, each a few inserts, updates
// and deletes over orders and items plus a txlog row, and keeps the model of
// every committed change. A commit whose answer was lost (Postgres crashed)
// is resolved by looking for its txlog row once Postgres is back.
type chaosWriter struct {
	dsn string
	rng *rand.Rand

	orders map[int64]string // live rows: id -> tenant
	items  map[int64]bool
	nextID int64
	// changes of committed transactions: "table op id [v]" -> the tenant
	// it matches on and, for an update, the tenant the row had before
	// ("" for items)
	changes   map[string]writeOp
	committed int
	ambiguous int
	err       error
}

type writeOp struct {
	sql, key, tenant, oldTenant string
}

func (w *chaosWriter) run(ctx context.Context) {
	w.orders, w.items, w.changes = map[int64]string{}, map[int64]bool{}, map[string]writeOp{}
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	failures := 0
	for k := int64(1); ctx.Err() == nil; k++ {
		ops := w.plan(k)
		if conn == nil {
			if conn = w.connect(ctx); conn == nil {
				return
			}
		}
		if err := w.commit(ctx, conn, k, ops); err != nil {
			// Unknown outcome: find out once Postgres answers again.
			conn.Close(context.Background())
			conn = nil
			committed, rconn, rerr := w.resolve(ctx, k)
			conn = rconn
			if rerr != nil {
				w.err = fmt.Errorf("transaction %d failed (%v) and its outcome could not be read: %w", k, err, rerr)
				return
			}
			if !committed {
				if failures++; failures > 50 {
					w.err = fmt.Errorf("transaction %d: %d failures in a row, last: %w", k, failures, err)
					return
				}
				continue
			}
			w.ambiguous++
		}
		failures = 0
		w.apply(ops)
		w.committed++
		time.Sleep(time.Duration(2+w.rng.IntN(8)) * time.Millisecond)
	}
}

// resolve reads whether transaction k committed, waiting up to two minutes
// for Postgres to come back (the test ending does not stop it: the model
// must know). It returns the connection it used.
func (w *chaosWriter) resolve(ctx context.Context, k int64) (bool, *pgx.Conn, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var lastErr error
	for rctx.Err() == nil {
		conn := w.connect(rctx)
		if conn == nil {
			break
		}
		var committed bool
		qctx, qcancel := context.WithTimeout(rctx, 10*time.Second)
		err := conn.QueryRow(qctx, "SELECT EXISTS (SELECT 1 FROM txlog WHERE k = $1)", k).Scan(&committed)
		qcancel()
		if err == nil {
			return committed, conn, nil
		}
		lastErr = err
		conn.Close(context.Background())
		time.Sleep(50 * time.Millisecond)
	}
	return false, nil, fmt.Errorf("Postgres did not answer within 2 minutes: %v", lastErr)
}

// connect retries until Postgres answers; nil when ctx ends first.
func (w *chaosWriter) connect(ctx context.Context) *pgx.Conn {
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := pgx.Connect(cctx, w.dsn)
		cancel()
		if err == nil {
			return conn
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func (w *chaosWriter) commit(ctx context.Context, conn *pgx.Conn, k int64, ops []writeOp) error {
	// A crash is noticed by an error; ending ctx only stops the next one.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	var b strings.Builder
	b.WriteString("BEGIN;")
	for _, op := range ops {
		b.WriteString(op.sql)
		b.WriteString(";")
	}
	fmt.Fprintf(&b, "INSERT INTO txlog VALUES (%d); COMMIT", k)
	_, err := conn.Exec(cctx, b.String())
	return err
}

// plan draws one transaction's operations against the model (without
// changing it).
func (w *chaosWriter) plan(k int64) []writeOp {
	tenants := []string{"a", "b", "c"}
	touched := map[string]bool{}
	pick := func(table string, live []int64) (int64, bool) {
		for range 4 {
			if len(live) == 0 {
				return 0, false
			}
			id := live[w.rng.IntN(len(live))]
			if !touched[fmt.Sprint(table, id)] {
				touched[fmt.Sprint(table, id)] = true
				return id, true
			}
		}
		return 0, false
	}
	orderIDs := sortedIDs(w.orders)
	itemIDs := sortedIDs(w.items)
	// insert is the op inserting row id into table: an order of a tenant
	// picked at random, or an item.
	insert := func(table string, id int64) writeOp {
		if table == "orders" {
			tn := tenants[w.rng.IntN(3)]
			return writeOp{fmt.Sprintf("INSERT INTO orders VALUES (%d, '%s', %d)", id, tn, k),
				fmt.Sprintf("public.orders insert %d", id), tn, ""}
		}
		return writeOp{fmt.Sprintf("INSERT INTO items VALUES (%d, %d)", id, k), fmt.Sprintf("public.items insert %d", id), "", ""}
	}
	var ops []writeOp
	next := w.nextID
	if w.rng.IntN(15) == 0 {
		// A large transaction: many parts of -fragment-bytes, more than
		// an outbox holds.
		for range 100 + w.rng.IntN(150) {
			next++
			table := "items"
			if w.rng.IntN(2) == 0 {
				table = "orders"
			}
			ops = append(ops, insert(table, next))
		}
		return ops
	}
	for range 1 + w.rng.IntN(3) {
		table := "orders"
		if w.rng.IntN(3) == 0 {
			table = "items"
		}
		r := w.rng.IntN(10)
		switch {
		case r < 5: // insert
			next++
			touched[fmt.Sprint(table, next)] = true
			ops = append(ops, insert(table, next))
		case r < 8: // update; an order may move to another tenant
			if table == "orders" {
				if id, ok := pick(table, orderIDs); ok {
					tn := tenants[w.rng.IntN(3)]
					ops = append(ops, writeOp{fmt.Sprintf("UPDATE orders SET tenant = '%s', v = %d WHERE id = %d", tn, k, id),
						fmt.Sprintf("public.orders update %d %d", id, k), tn, w.orders[id]})
				}
			} else if id, ok := pick(table, itemIDs); ok {
				ops = append(ops, writeOp{fmt.Sprintf("UPDATE items SET v = %d WHERE id = %d", k, id),
					fmt.Sprintf("public.items update %d %d", id, k), "", ""})
			}
		default: // delete
			if table == "orders" {
				if id, ok := pick(table, orderIDs); ok {
					ops = append(ops, writeOp{fmt.Sprintf("DELETE FROM orders WHERE id = %d", id),
						fmt.Sprintf("public.orders delete %d", id), w.orders[id], ""})
				}
			} else if id, ok := pick(table, itemIDs); ok {
				ops = append(ops, writeOp{fmt.Sprintf("DELETE FROM items WHERE id = %d", id),
					fmt.Sprintf("public.items delete %d", id), "", ""})
			}
		}
	}
	if len(ops) == 0 { // always touch a shape
		next++
		ops = append(ops, insert("items", next))
	}
	return ops
}

// apply records a committed transaction in the model.
func (w *chaosWriter) apply(ops []writeOp) {
	for _, op := range ops {
		f := strings.Fields(op.key)
		id, _ := strconv.ParseInt(f[2], 10, 64)
		w.nextID = max(w.nextID, id)
		switch {
		case f[0] == "public.orders" && f[1] == "delete":
			delete(w.orders, id)
		case f[0] == "public.orders":
			w.orders[id] = op.tenant
		case f[1] == "delete":
			delete(w.items, id)
		default:
			w.items[id] = true
		}
		w.changes[op.key] = op
	}
}

// expected maps each shape to the committed changes it matches (true:
// must be delivered) or may get (false): routing may over-deliver, never
// under-deliver. Under the default replica identity a delete's old row is
// only the key, so a delete of another tenant's row reaches a filtered
// shape too; an update of a row leaving a filter carries no old row and
// may or may not reach the shape it leaves.
func (w *chaosWriter) expected(defs []chaosShapes) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, def := range defs {
		for id, sh := range def.shapes {
			m := map[string]bool{}
			for key, op := range w.changes {
				if !strings.HasPrefix(key, sh.table+" ") {
					continue
				}
				allowed, filtered := sh.filter["tenant"]
				switch {
				case !filtered || slices.Contains(allowed, op.tenant):
					m[key] = true
				case op.oldTenant != "" && slices.Contains(allowed, op.oldTenant):
					m[key] = false
				case strings.HasPrefix(key, "public.orders delete "):
					m[key] = false
				}
			}
			out[id] = m
		}
	}
	return out
}

func sortedIDs[V any](m map[int64]V) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ---- consumers ----

type chaosShapes struct {
	id     string
	shapes map[string]shapeDef
}

// chaosConsumer is a consumer run with client.Run over a transport the
// test controls: it sees every ack request (what was sent, what was
// answered 200) and every stream opened, and can cut the connections. The
// test is the consumer's durable store.
type chaosConsumer struct {
	t   *testing.T
	def chaosShapes
	k   *client.Consumer
	tr  *chaosTransport

	cancel context.CancelFunc
	done   chan error
	rng    *rand.Rand // handler goroutine only

	mu         sync.Mutex
	gen        int                        // stream connections opened
	atOpen     map[string]ledger.LSN      // durable acks when the current stream was opened
	lastInConn ledger.LSN                 // commit LSN of the last txn on the current stream
	got        map[string]map[string]bool // shape -> change keys received
	lsns       map[string][]ledger.LSN    // shape -> distinct commit LSNs received, sorted
	deliveries map[string]int
	sent       map[string]ledger.LSN // highest ack sent per shape
	durable    map[string]ledger.LSN // highest ack answered 200 per shape
	maxEnd     ledger.LSN
	count      int
	violations []string
}

func newChaosConsumer(t *testing.T, url string, def chaosShapes, rng *rand.Rand) *chaosConsumer {
	t.Helper()
	c := &chaosConsumer{t: t, def: def, rng: rng, got: map[string]map[string]bool{}, lsns: map[string][]ledger.LSN{},
		deliveries: map[string]int{}, sent: map[string]ledger.LSN{}, durable: map[string]ledger.LSN{}}
	c.tr = &chaosTransport{c: c, conns: map[net.Conn]bool{}}
	c.tr.base = &http.Transport{DialContext: c.tr.dial, MaxIdleConnsPerHost: 4}
	cl, err := client.New(client.Config{URL: url, Token: testToken, HTTPClient: &http.Client{Transport: newAPIChecker(t).transport(c.tr)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.k, err = cl.Register(ctx, client.ConsumerConfig{ID: def.id, TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for sid, sd := range def.shapes {
		if _, err := c.k.PutShape(ctx, sid, sd.table, sd.filter); err != nil {
			t.Fatal(err)
		}
		c.got[sid] = map[string]bool{}
	}
	c.start()
	t.Cleanup(c.stop)
	return c
}

func (c *chaosConsumer) start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan error, 1)
	go func() {
		c.done <- c.k.Run(ctx, c.handle, client.RunOptions{
			ReconnectMax: time.Second,
			OnEvicted: func(shape, reason string) {
				c.violate("shape %s evicted (%s) while its consumer lived", shape, reason)
			},
		})
	}()
}

// stop ends Run (which sends a last ack); idempotent.
func (c *chaosConsumer) stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	if err := <-c.done; err != nil {
		c.t.Errorf("consumer %s: %v", c.def.id, err)
	}
	c.cancel = nil
}

// cut closes the consumer's connections: its stream and any call in
// flight. client.Run reconnects.
func (c *chaosConsumer) cut() { c.tr.closeAll() }

// restart is a consumer process that dies without a word: its
// connections drop and what it handled but had not acked is lost; a new
// process resumes with the same lease.
func (c *chaosConsumer) restart(t *testing.T) {
	t.Helper()
	c.tr.down.Store(true)
	c.tr.closeAll()
	c.stop()
	c.tr.down.Store(false)
	c.start()
}

func (c *chaosConsumer) violate(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.violations = append(c.violations, fmt.Sprintf("consumer %s: ", c.def.id)+fmt.Sprintf(format, args...))
}

func (c *chaosConsumer) handle(_ context.Context, txn *client.Txn) error {
	// Now and then the work takes a while: the consumer falls behind.
	if c.rng.IntN(50) == 0 {
		time.Sleep(time.Duration(50+c.rng.IntN(400)) * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if txn.LSN <= c.lastInConn {
		c.violations = append(c.violations, fmt.Sprintf("consumer %s: connection %d sent %s after %s (not in commit order, or twice)",
			c.def.id, c.gen, txn.LSN, c.lastInConn))
	}
	c.lastInConn = txn.LSN
	c.count++
	c.maxEnd = max(c.maxEnd, txn.EndLSN)
	for _, sh := range txn.Shapes() {
		if _, ok := c.def.shapes[sh]; !ok {
			c.violations = append(c.violations, fmt.Sprintf("consumer %s: got %s for shape %s, not its own", c.def.id, txn.LSN, sh))
			continue
		}
		if a := c.atOpen[sh]; txn.LSN <= a {
			c.violations = append(c.violations, fmt.Sprintf("consumer %s: shape %s got %s again on connection %d, opened after its ack of %s was answered 200 (I2)",
				c.def.id, sh, txn.LSN, c.gen, a))
		}
		c.deliveries[sh]++
		l := c.lsns[sh]
		if i, ok := slices.BinarySearch(l, txn.LSN); !ok {
			c.lsns[sh] = slices.Insert(l, i, txn.LSN)
		}
	}
	for _, ch := range txn.Changes {
		row := ch.New
		if ch.Op == "delete" {
			row = ch.Old
		}
		key := fmt.Sprintf("%s %s %s", ch.Table, ch.Op, colText(row, "id"))
		if ch.Op == "update" {
			key += " " + colText(row, "v")
		}
		for _, sh := range ch.Shapes {
			if m := c.got[sh]; m != nil {
				m[key] = true
			}
		}
	}
	return nil
}

func colText(row map[string]*string, col string) string {
	if v := row[col]; v != nil {
		return *v
	}
	return "<null>"
}

func (c *chaosConsumer) streamOpened() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.atOpen = maps.Clone(c.durable)
	c.lastInConn = 0
}

func (c *chaosConsumer) acked(acks map[string]string, durable bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for sh, s := range acks {
		l, err := ledger.ParseLSN(s)
		if err != nil {
			continue
		}
		if durable {
			c.durable[sh] = max(c.durable[sh], l)
		} else {
			c.sent[sh] = max(c.sent[sh], l)
		}
	}
}

// pending returns, per shape, the smallest commit LSN received and not
// yet covered by an ack request sent.
func (c *chaosConsumer) pending() map[string]ledger.LSN {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]ledger.LSN{}
	for sh, l := range c.lsns {
		i, found := slices.BinarySearch(l, c.sent[sh])
		if found {
			i++
		}
		if i < len(l) {
			out[sh] = l[i]
		}
	}
	return out
}

func (c *chaosConsumer) handled() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

func (c *chaosConsumer) lastEnd() ledger.LSN {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxEnd
}

func (c *chaosConsumer) hasAll(want map[string]map[string]bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for sh := range c.def.shapes {
		for k, must := range want[sh] {
			if must && !c.got[sh][k] {
				return false
			}
		}
	}
	return true
}

func (c *chaosConsumer) allAcked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for sh, l := range c.lsns {
		if len(l) > 0 && c.durable[sh] < l[len(l)-1] {
			return false
		}
	}
	return true
}

// chaosTransport is the consumer's HTTP transport: it records stream opens
// and acks, and can close every connection or refuse every call (a dead
// process).
type chaosTransport struct {
	c    *chaosConsumer
	base *http.Transport
	down atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (tr *chaosTransport) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: conn, tr: tr}
	tr.mu.Lock()
	tr.conns[tc] = true
	tr.mu.Unlock()
	return tc, nil
}

func (tr *chaosTransport) closeAll() {
	tr.mu.Lock()
	conns := make([]net.Conn, 0, len(tr.conns))
	for c := range tr.conns {
		conns = append(conns, c)
	}
	tr.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	tr *chaosTransport
}

func (c *trackedConn) Close() error {
	c.tr.mu.Lock()
	delete(c.tr.conns, c)
	c.tr.mu.Unlock()
	return c.Conn.Close()
}

var errProcessDead = errors.New("the consumer process is dead")

func (tr *chaosTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if tr.down.Load() {
		return nil, errProcessDead
	}
	switch {
	case strings.HasSuffix(req.URL.Path, "/stream"):
		tr.c.streamOpened()
		return tr.base.RoundTrip(req)
	case strings.HasSuffix(req.URL.Path, "/ack") && req.Body != nil:
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		var ar wire.AckRequest
		_ = json.Unmarshal(body, &ar)
		tr.c.acked(ar.Acks, false)
		resp, err := tr.base.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			return resp, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err // the answer was lost: not known durable
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		tr.c.acked(ar.Acks, true)
		return resp, nil
	}
	return tr.base.RoundTrip(req)
}

// ---- flush poller ----

// flushPoller samples the slot's confirmed_flush_lsn against the
// consumers' records: it never goes backwards between two samples with no
// Postgres crash between them (I6), and never passes a transaction that a
// shape received and had not sent an ack for before the sample and still
// had not after it (I1).
type flushPoller struct {
	dsn       string
	slot      string
	pg        *pgFaults
	consumers []*chaosConsumer

	samples atomic.Int64
	mu      sync.Mutex
	fail    string
}

func (p *flushPoller) failure() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fail
}

func (p *flushPoller) report(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail == "" {
		p.fail = fmt.Sprintf(format, args...)
	}
}

func (p *flushPoller) run(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	var last ledger.LSN
	lastEpoch := ^uint64(0)
	for ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		p.pg.mu.RLock()
		epoch := p.pg.epoch
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := pgx.Connect(cctx, p.dsn)
			cancel()
			if err != nil {
				p.pg.mu.RUnlock()
				continue
			}
			conn = c
		}
		before := p.pending()
		var s *string
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := conn.QueryRow(qctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", p.slot).Scan(&s)
		cancel()
		p.pg.mu.RUnlock()
		if err != nil || s == nil {
			if err != nil {
				conn.Close(context.Background())
				conn = nil
			}
			continue
		}
		cf, err := ledger.ParseLSN(*s)
		if err != nil {
			p.report("confirmed_flush_lsn %q: %v", *s, err)
			continue
		}
		after := p.pending()
		p.samples.Add(1)
		if epoch == lastEpoch && cf < last {
			p.report("confirmed_flush_lsn went back from %s to %s with no Postgres crash in between (I6)", last, cf)
		}
		last, lastEpoch = cf, epoch
		for sh, l := range before {
			if after[sh] == l && cf > l {
				p.report("confirmed_flush_lsn %s passed %s, received by shape %s and not acked (I1)", cf, l, sh)
			}
		}
	}
}

func (p *flushPoller) pending() map[string]ledger.LSN {
	out := map[string]ledger.LSN{}
	for _, c := range p.consumers {
		for sh, l := range c.pending() {
			out[sh] = l
		}
	}
	return out
}
