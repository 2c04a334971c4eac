package main_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// benchTxns is the number of single-row transactions each case streams.
const benchTxns = 100_000

// BenchmarkEndToEnd measures the whole path — slot -> ledgerd -> HTTP ->
// consumer -> batched ack -> durable in the ledger -> status update -> slot
// advanced — against pg_recvlogical reading a copy of the same slot
// (pg_copy_logical_replication_slot) to the same end, and reports the ratio
// of their rates. Targets: >= 0.8 for 1 consumer with 1 shape, >= 0.5 for
// 8 consumers with 1000 filtered shapes over 10 tables.
//
// Consumers and shapes are created first, with ledgerd running on the empty
// slot; ledgerd is stopped, the transactions are committed, the slot is
// copied, and ledgerd is started again on it: its time runs from process
// start to the slot's confirmed_flush_lsn reaching the last transaction.
// The setup dominates, so each case runs once whatever b.N.
func BenchmarkEndToEnd(b *testing.B) {
	b.Run("1consumer_1shape", func(b *testing.B) { benchEndToEnd(b, 1, 1, 1) })
	b.Run("8consumers_1000shapes_10tables", func(b *testing.B) { benchEndToEnd(b, 8, 1000, 10) })
}

func benchEndToEnd(b *testing.B, consumers, shapes, tables int) {
	ctx := context.Background()
	dsn := pgtest.NewDB(b, cluster)
	slot := strings.TrimPrefix(pgtest.DBName(b.Name()), "t_")
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	exec1 := func(q string) {
		b.Helper()
		if _, err := conn.Exec(ctx, q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	var names []string
	for i := range tables {
		exec1(fmt.Sprintf("CREATE TABLE bench%d (id int PRIMARY KEY, tenant text, v text)", i))
		names = append(names, fmt.Sprintf("public.bench%d", i))
	}
	exec1(fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", slot, strings.Join(names, ", ")))

	// Phase 1: consumers and shapes on the empty slot. Shape k follows table
	// k%tables and, with more than one shape, tenant k/tables: every row
	// reaches exactly one shape.
	dbPath := filepath.Join(b.TempDir(), "ledgerd.db")
	addr := freeAddr(b)
	flags := []string{"-status-interval", "200ms", "-log-level", "warn"}
	d := startDaemonOn(b, addr, dsn, slot, dbPath, flags...)
	ks := make([]*client.Consumer, consumers)
	for i := range ks {
		if ks[i], err = d.c.Register(ctx, client.ConsumerConfig{ID: fmt.Sprintf("c%d", i), TTL: 5 * time.Minute}); err != nil {
			b.Fatal(err)
		}
	}
	for k := range shapes {
		var filter map[string][]string
		if shapes > 1 {
			filter = map[string][]string{"tenant": {fmt.Sprint(k / tables)}}
		}
		if _, err := ks[k%consumers].PutShape(ctx, fmt.Sprintf("s%04d", k), names[k%tables], filter); err != nil {
			b.Fatal(err)
		}
	}
	d.stop()

	// The transactions: one row each, committed without waiting for each
	// WAL flush (the benchmark is about reading them).
	exec1("SET synchronous_commit = off")
	tenants := max(shapes/tables, 1)
	var body strings.Builder
	body.WriteString("DO $$ BEGIN FOR i IN 0..")
	fmt.Fprintf(&body, "%d LOOP\n", benchTxns-1)
	body.WriteString("CASE i % " + fmt.Sprint(tables) + "\n")
	for t := range tables {
		fmt.Fprintf(&body, "WHEN %d THEN INSERT INTO bench%d VALUES (i, ((i / %d) %% %d)::text, 'value ' || i);\n", t, t, tables, tenants)
	}
	body.WriteString("END CASE; COMMIT; END LOOP; END $$")
	exec1(body.String())
	var endText string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&endText); err != nil {
		b.Fatal(err)
	}
	for i := range 2 {
		exec1(fmt.Sprintf("SELECT pg_copy_logical_replication_slot('%s', '%s_recv%d')", slot, slot, i))
	}
	exec1("CHECKPOINT")

	// pg_recvlogical on a copy, before and after ledgerd.
	recv := func(i int) float64 {
		start := time.Now()
		cmd := exec.Command(filepath.Join(cluster.BinDir(), "pg_recvlogical"), "-d", dsn, "--slot", fmt.Sprintf("%s_recv%d", slot, i),
			"--start", "--endpos", endText, "--no-loop", "-o", "proto_version=1", "-o", "publication_names="+slot, "-f", "/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pg_recvlogical: %v\n%s", err, out)
		}
		return benchTxns / time.Since(start).Seconds()
	}
	recvRates := []float64{recv(0)}

	// Phase 2: ledgerd streams the slot to the consumers, which ack.
	var received atomic.Int64
	var lastEnd atomic.Uint64
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	d = startDaemonOn(b, addr, dsn, slot, dbPath, flags...)
	for _, k := range ks {
		wg.Go(func() {
			err := k.Run(runCtx, func(_ context.Context, txn *client.Txn) error {
				received.Add(1)
				for {
					cur := lastEnd.Load()
					if uint64(txn.EndLSN) <= cur || lastEnd.CompareAndSwap(cur, uint64(txn.EndLSN)) {
						break
					}
				}
				return nil
			}, client.RunOptions{})
			if err != nil {
				b.Errorf("consumer %s: %v", k.ID(), err)
			}
		})
	}
	ready := time.Since(start)
	var allReceived time.Duration
	deadline := time.Now().Add(10 * time.Minute)
	for received.Load() < benchTxns || confirmedFlushB(b, conn, slot) < ledger.LSN(lastEnd.Load()) {
		if allReceived == 0 && received.Load() >= benchTxns {
			allReceived = time.Since(start)
		}
		if time.Now().After(deadline) {
			b.Fatalf("ledgerd did not deliver and confirm %d transactions within 10 minutes (got %d)", benchTxns, received.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	secs := time.Since(start).Seconds()
	b.Logf("ready after %v, all received after %v, confirmed after %.2fs", ready, allReceived, secs)
	cancel()
	wg.Wait()
	d.stop()
	if got := received.Load(); got != benchTxns {
		b.Errorf("consumers got %d transactions, want %d", got, benchTxns)
	}
	recvRates = append(recvRates, recv(1))

	rate := benchTxns / secs
	recvRate := (recvRates[0] + recvRates[1]) / 2
	sort.Float64s(recvRates)
	b.Logf("ledgerd end to end %.0f txn/s; pg_recvlogical %.0f txn/s", rate, recvRates)
	b.ReportMetric(rate, "ledgerd_txn/s")
	b.ReportMetric(recvRate, "recvlogical_txn/s")
	b.ReportMetric(rate/recvRate, "ratio")
}

func confirmedFlushB(b *testing.B, conn *pgx.Conn, slot string) ledger.LSN {
	b.Helper()
	var s *string
	if err := conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s); err != nil {
		b.Fatal(err)
	}
	if s == nil {
		return 0
	}
	l, _ := ledger.ParseLSN(*s)
	return l
}
