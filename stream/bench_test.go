package stream_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// counter is a Handler that counts transactions with changes and reports
// everything handled as flushed, so the benchmark measures the stream alone.
type counter struct {
	mu    sync.Mutex
	n     int
	last  ledger.LSN
	idle  ledger.LSN
	total int
	done  chan struct{}
}

func (c *counter) HandleTxn(_ context.Context, txn *stream.Txn) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = txn.EndLSN
	if len(txn.Changes) > 0 {
		c.n++
		if c.n == c.total {
			close(c.done)
		}
	}
	return nil
}

func (c *counter) Idle(walEnd ledger.LSN) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idle = max(c.idle, walEnd)
}

func (c *counter) FlushLSN() ledger.LSN {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.last, c.idle)
}

// BenchmarkStreamVsRecvlogical commits 200k single-row transactions, copies
// the slot (twice, plus a warm-up copy), then streams one copy with Stream
// and the other with pg_recvlogical, in the same run, and reports both rates
// and their ratio (target >= 0.9). The setup dominates, so one iteration is
// run whatever b.N.
func BenchmarkStreamVsRecvlogical(b *testing.B) {
	const total = 200_000
	ctx := context.Background()
	db := pgtest.NewDB(b, cluster)
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	mustExec := func(sql string) {
		b.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
	}
	mustExec(`CREATE TABLE bench (id int PRIMARY KEY, v text)`)
	mustExec(`CREATE PUBLICATION pub FOR TABLE bench`)
	mustExec(`SELECT pg_create_logical_replication_slot('bench_src', 'pgoutput')`)
	// One commit per row, without waiting for each WAL flush: the rows are
	// real single-row transactions, the benchmark is about reading them.
	mustExec(`SET synchronous_commit = off`)
	mustExec(fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP INSERT INTO bench VALUES (i, 'value ' || i); COMMIT; END LOOP; END $$`, total))
	var end string
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&end); err != nil {
		b.Fatal(err)
	}
	mustExec(`SELECT pg_copy_logical_replication_slot('bench_src', 'bench_stream')`)
	mustExec(`SELECT pg_copy_logical_replication_slot('bench_src', 'bench_recv')`)
	mustExec(`SELECT pg_copy_logical_replication_slot('bench_src', 'bench_warm')`)
	mustExec(`SELECT pg_drop_replication_slot('bench_src')`)
	// Let autovacuum's work on the fresh table and the checkpoint happen now
	// rather than compete with whichever reader runs first.
	mustExec(`VACUUM ANALYZE bench`)
	mustExec(`CHECKPOINT`)
	// An untimed first read of a third copy, so that neither timed reader
	// pays for a cold start (the first reader was consistently slower).
	recvlogical(b, db, "bench_warm", end)
	b.ResetTimer()

	// pg_recvlogical on the other copy, up to the same end position.
	start := time.Now()
	recvlogical(b, db, "bench_recv", end)
	recvSecs := time.Since(start).Seconds()

	// Stream.
	h := &counter{total: total, done: make(chan struct{})}
	s, err := stream.New(stream.Config{ConnString: db, Slot: "bench_stream", Publication: "pub", HeartbeatInterval: -1}, h)
	if err != nil {
		b.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	start = time.Now()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(sctx) }()
	select {
	case <-h.done:
	case err := <-runErr:
		b.Fatalf("stream ended early: %v", err)
	case <-time.After(10 * time.Minute):
		b.Fatal("stream did not deliver all transactions within 10 minutes")
	}
	streamSecs := time.Since(start).Seconds()
	cancel()
	if err := <-runErr; err != nil {
		b.Fatal(err)
	}

	b.StopTimer()

	streamRate, recvRate := total/streamSecs, total/recvSecs
	b.ReportMetric(streamRate, "stream_txn/s")
	b.ReportMetric(recvRate, "recvlogical_txn/s")
	b.ReportMetric(streamRate/recvRate, "ratio")
}

// recvlogical runs pg_recvlogical on slot up to end, discarding the output.
func recvlogical(b *testing.B, db, slot, end string) {
	b.Helper()
	cmd := exec.Command(filepath.Join(cluster.BinDir(), "pg_recvlogical"),
		"-d", db, "--slot", slot, "--start", "--endpos", end, "--no-loop",
		"-o", "proto_version=1", "-o", "publication_names=pub", "-f", "/dev/null")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("pg_recvlogical: %v\n%s", err, out)
	}
}
