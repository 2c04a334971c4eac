package main_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// bigInsert inserts rows 1..n into t in one transaction, tenant "a" for
// even ids and "b" for odd ones, each row about 45 bytes of text.
func bigInsert(n int) string {
	return fmt.Sprintf("INSERT INTO t SELECT g, CASE WHEN g %% 2 = 0 THEN 'a' ELSE 'b' END, repeat('x', 30) "+
		"FROM generate_series(1, %d) g", n)
}

// partReader reads a raw change stream and checks the part rules as it goes.
type partReader struct {
	t *testing.T
	s *client.Stream
}

// txn reads the next transaction whole, checking that its parts come in
// order (part 1, 2, ..., the last one marked last, all of one LSN). It
// returns the transaction's commit LSN, its row ids, and how many parts it
// came in. stopAfter > 0 returns after that many parts of it instead.
func (r *partReader) txn(stopAfter int) (ledger.LSN, []int, int) {
	r.t.Helper()
	var lsn ledger.LSN
	var ids []int
	parts := 0
	for {
		_, txn, err := r.s.Next()
		if err != nil {
			r.t.Fatal(err)
		}
		if txn == nil {
			continue
		}
		if parts == 0 {
			lsn = txn.LSN
		}
		parts++
		if txn.LSN != lsn || txn.Part != parts {
			r.t.Fatalf("got part %d of %s, want part %d of %s", txn.Part, txn.LSN, parts, lsn)
		}
		if !txn.Last && txn.EndLSN != 0 {
			r.t.Errorf("part %d of %s carries end_lsn %s before the last part", txn.Part, lsn, txn.EndLSN)
		}
		for _, ch := range txn.Changes {
			id, _ := strconv.Atoi(*ch.New["id"])
			ids = append(ids, id)
		}
		if txn.Last || parts == stopAfter {
			return lsn, ids, parts
		}
	}
}

func seq(from, to, step int) []int {
	var out []int
	for i := from; i <= to; i += step {
		out = append(out, i)
	}
	return out
}

// TestLargeTransactionInParts: with a small -fragment-bytes, a transaction
// of thousands of rows reaches an unfiltered and a filtered shape whole and
// in order, as several txn frames of the same LSN (RunParts gets each part,
// Run the whole transaction once); it is acked once, after its last part,
// and the slot moves past it. A small transaction still comes as one frame.
func TestLargeTransactionInParts(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY, tenant text, v text)")
	d := startDaemon(t, dsn, slot, "", "-fragment-bytes", "2KiB", "-outbox-bytes", "16KiB")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Consumer p: both shapes, handled part by part.
	kp, err := d.c.Register(ctx, client.ConsumerConfig{ID: "p", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for id, f := range map[string]map[string][]string{"all": nil, "only_a": {"tenant": {"a"}}} {
		if _, err := kp.PutShape(ctx, id, "public.t", f); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	rows := map[string][]int{}
	type part struct {
		lsn  ledger.LSN
		part int
		last bool
	}
	var parts []part
	var flushed ledger.LSN
	pdone := make(chan error, 1)
	go func() {
		pdone <- kp.RunParts(ctx, func(_ context.Context, txn *client.Txn) error {
			mu.Lock()
			defer mu.Unlock()
			parts = append(parts, part{txn.LSN, txn.Part, txn.Last})
			for _, ch := range txn.Changes {
				id, _ := strconv.Atoi(*ch.New["id"])
				for _, s := range ch.Shapes {
					rows[s] = append(rows[s], id)
				}
			}
			return nil
		}, client.RunOptions{OnAck: func(acks map[string]ledger.LSN, flush ledger.LSN) {
			mu.Lock()
			defer mu.Unlock()
			flushed = max(flushed, flush)
		}})
	}()
	// Consumer w: the filtered shape, handled whole.
	kw := registerShape(t, d, "w", 30*time.Second, "w_a", "public.t", map[string][]string{"tenant": {"a"}})
	var whole []*client.Txn
	wdone := make(chan error, 1)
	go func() {
		wdone <- kw.Run(ctx, func(_ context.Context, txn *client.Txn) error {
			mu.Lock()
			defer mu.Unlock()
			whole = append(whole, txn)
			return nil
		}, client.RunOptions{})
	}()

	const n = 3000
	sql(t, dsn, bigInsert(n), "INSERT INTO t VALUES (100000, 'a', 'small')")
	waitFor(t, "both transactions handled", 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(whole) == 2 && len(rows["all"]) == n+1
	})
	waitFor(t, "the slot to pass both transactions", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return confirmedFlush(t, dsn, slot) > whole[1].LSN
	})
	cancel()
	<-pdone
	<-wdone

	mu.Lock()
	defer mu.Unlock()
	if want := append(seq(1, n, 1), 100000); !slices.Equal(rows["all"], want) {
		t.Errorf("unfiltered shape got %d rows, want 1..%d and 100000 in order", len(rows["all"]), n)
	}
	if want := append(seq(2, n, 2), 100000); !slices.Equal(rows["only_a"], want) {
		t.Errorf("filtered shape got %d rows, want the %d even ids and 100000 in order", len(rows["only_a"]), n/2)
	}
	big := parts[0].lsn
	var bigParts []part
	for _, p := range parts {
		if p.lsn == big {
			bigParts = append(bigParts, p)
		}
	}
	if len(bigParts) < 10 {
		t.Errorf("the large transaction came in %d parts, want many with -fragment-bytes 2KiB", len(bigParts))
	}
	for i, p := range bigParts {
		if p.part != i+1 || p.last != (i == len(bigParts)-1) {
			t.Errorf("part %d of the large transaction: got part %d last %v", i+1, p.part, p.last)
			break
		}
	}
	if last := parts[len(parts)-1]; last.lsn == big || last.part != 1 || !last.last {
		t.Errorf("the small transaction came as %+v, want one part", last)
	}
	var ids []int
	for _, ch := range whole[0].Changes {
		id, _ := strconv.Atoi(*ch.New["id"])
		ids = append(ids, id)
	}
	if whole[0].LSN != big || !slices.Equal(ids, seq(2, n, 2)) {
		t.Errorf("Run's handler got %s with %d rows, want %s whole with the %d even ids", whole[0].LSN, len(ids), big, n/2)
	}
}

// largeTxn is the start both large-transaction tests share: a daemon with
// 2KiB parts and a 16KiB outbox, a consumer streaming one unfiltered shape
// "s" of table t, and a transaction of one row (first, acked) before a
// transaction of n rows, then the statements of after.
type largeTxn struct {
	dsn, slot string
	d         *daemon
	ctx       context.Context
	k         *client.Consumer
	s         *client.Stream
	r         *partReader
	first     ledger.LSN
}

func startLargeTxn(t *testing.T, n int, after ...string) largeTxn {
	t.Helper()
	lt := largeTxn{dsn: pgtest.NewDB(t, cluster), slot: slotName(t), ctx: context.Background()}
	sql(t, lt.dsn, "CREATE TABLE t (id int PRIMARY KEY, tenant text, v text)")
	lt.d = startDaemon(t, lt.dsn, lt.slot, "", "-fragment-bytes", "2KiB", "-outbox-bytes", "16KiB")
	lt.k = registerShape(t, lt.d, "c", 60*time.Second, "s", "public.t", nil)
	s, err := lt.k.OpenStream(lt.ctx)
	if err != nil {
		t.Fatal(err)
	}
	lt.s = s
	lt.r = &partReader{t: t, s: s}
	sql(t, lt.dsn, append([]string{"INSERT INTO t VALUES (0, 'a', 'first')", bigInsert(n)}, after...)...)
	lt.first, _, _ = lt.r.txn(0)
	if _, err := lt.k.Ack(lt.ctx, map[string]ledger.LSN{"s": lt.first}); err != nil {
		t.Fatal(err)
	}
	return lt
}

// TestLargeTransactionCutStream: a consumer reads a few parts of a
// transaction larger than its outbox and its stream is cut. The next stream
// sends the transaction again from part 1, whole (the parts already read
// were spilled, so it comes again from the slot), after nothing already
// acked; acked after its last part, it is never sent again.
func TestLargeTransactionCutStream(t *testing.T) {
	const n = 4000
	lt := startLargeTxn(t, n, "INSERT INTO t VALUES (100000, 'a', 'after')")
	dsn, slot, d, ctx, k, s, r := lt.dsn, lt.slot, lt.d, lt.ctx, lt.k, lt.s, lt.r
	var err error
	big, ids, parts := r.txn(30)
	if parts != 30 || len(ids) >= n {
		t.Fatalf("read %d parts with %d rows, want 30 parts of a larger transaction", parts, len(ids))
	}
	s.Close() // cut mid-transaction (for the consumer: ledgerd may have written more)

	s, err = k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	lsn, ids, parts := r.txn(0)
	if lsn != big || !slices.Equal(ids, seq(1, n, 1)) {
		t.Fatalf("after the cut got %s with %d rows, want %s whole from part 1 (%d rows)", lsn, len(ids), big, n)
	}
	if _, err := k.Ack(ctx, map[string]ledger.LSN{"s": big}); err != nil {
		t.Fatal(err)
	}
	after, ids, _ := r.txn(0)
	if !slices.Equal(ids, []int{100000}) {
		t.Fatalf("after the large transaction got %v, want row 100000", ids)
	}
	s.Close()
	waitFor(t, "the slot to pass the large transaction", 30*time.Second, func() bool {
		return confirmedFlush(t, dsn, slot) > big
	})
	m := scrape(t, d)
	if m["ledgerd_txn_parts_total"] < float64(parts+30) || m["ledgerd_spilled_parts_total"] < 1 {
		t.Errorf("txn_parts_total %v, spilled_parts_total %v: want the parts of both streams (30 read before the cut) counted and some spilled",
			m["ledgerd_txn_parts_total"], m["ledgerd_spilled_parts_total"])
	}

	// Acked once: a new stream starts after it.
	s, err = k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r.s = s
	if lsn, _, _ := r.txn(0); lsn != after {
		t.Errorf("after the ack a new stream sent %s first, want %s (nothing acked again)", lsn, after)
	}
	t.Logf("large transaction came in %d parts", parts)
}

// TestLargeTransactionKillNine: ledgerd is SIGKILLed while a consumer is
// reading a large transaction. After the restart the consumer gets the
// transaction again whole, from part 1, and nothing it had acked.
func TestLargeTransactionKillNine(t *testing.T) {
	const n = 4000
	lt := startLargeTxn(t, n)
	dsn, slot, d, ctx, k, s, r, first := lt.dsn, lt.slot, lt.d, lt.ctx, lt.k, lt.s, lt.r, lt.first
	var err error
	big, _, _ := r.txn(20)
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	s.Close()
	if cf := confirmedFlush(t, dsn, slot); cf > big {
		t.Errorf("confirmed flush %s passed the transaction being read %s", cf, big)
	}

	startDaemonOn(t, d.addr, dsn, slot, d.dbPath, "-fragment-bytes", "2KiB", "-outbox-bytes", "16KiB")
	s, err = k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r.s = s
	lsn, ids, _ := r.txn(0)
	if lsn != big || !slices.Equal(ids, seq(1, n, 1)) {
		t.Fatalf("after SIGKILL got %s with %d rows, want %s whole from part 1 and not the acked %s", lsn, len(ids), big, first)
	}
	if _, err := k.Ack(ctx, map[string]ledger.LSN{"s": big}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slot to pass the large transaction", 30*time.Second, func() bool {
		return confirmedFlush(t, dsn, slot) > big
	})
}

// TestAckConfirmedSoonOnIdleDatabase: on an idle database, an ack that
// moves the safe position reaches the slot's confirmed_flush_lsn at once
// (a status update follows the ack, rate-limited), not at the next status
// interval, which this daemon sets far beyond the wait.
func TestAckConfirmedSoonOnIdleDatabase(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY, tenant text, v text)")
	d := startDaemon(t, dsn, slot, "", "-status-interval", "10m")
	ctx := context.Background()
	k := registerShape(t, d, "c", 60*time.Second, "s", "public.t", nil)
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := &partReader{t: t, s: s}
	for i := range 3 {
		sql(t, dsn, fmt.Sprintf("INSERT INTO t VALUES (%d, 'a', 'v')", i))
		lsn, _, _ := r.txn(0)
		if cf := confirmedFlush(t, dsn, slot); cf > lsn {
			t.Fatalf("confirmed flush %s passed %s before its ack", cf, lsn)
		}
		if _, err := k.Ack(ctx, map[string]ledger.LSN{"s": lsn}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the ack to reach confirmed_flush_lsn", 5*time.Second, func() bool {
			return confirmedFlush(t, dsn, slot) > lsn
		})
	}
}
