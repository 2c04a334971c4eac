package stream_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
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

// benchRounds is how many times each reader runs, alternating which goes
// first; the median rate of each is reported, so that load from outside
// (2 shared cores) and the order of the readers weigh on both alike.
const benchRounds = 3

// BenchmarkStreamVsRecvlogical commits 200k single-row transactions, copies
// the slot (once per reader and round, plus a warm-up copy), then streams
// copies with Stream and with pg_recvlogical, alternately, in the same run,
// and reports the median rates and their ratio (target >= 0.9). The setup
// dominates, so one iteration is run whatever b.N.
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
	mustExec(`SELECT pg_copy_logical_replication_slot('bench_src', 'bench_warm')`)
	for i := range benchRounds {
		mustExec(fmt.Sprintf(`SELECT pg_copy_logical_replication_slot('bench_src', 'bench_stream_%d')`, i))
		mustExec(fmt.Sprintf(`SELECT pg_copy_logical_replication_slot('bench_src', 'bench_recv_%d')`, i))
	}
	mustExec(`SELECT pg_drop_replication_slot('bench_src')`)
	// Let autovacuum's work on the fresh table and the checkpoint happen now
	// rather than compete with whichever reader runs first, and read once
	// untimed so that no timed reader pays for a cold start.
	mustExec(`VACUUM ANALYZE bench`)
	mustExec(`CHECKPOINT`)
	recvlogical(b, db, "bench_warm", end)
	b.ResetTimer()

	var streamRates, recvRates []float64
	for i := range benchRounds {
		runStream := func() {
			secs := streamSlot(b, db, fmt.Sprintf("bench_stream_%d", i), total)
			streamRates = append(streamRates, total/secs)
		}
		runRecv := func() {
			start := time.Now()
			recvlogical(b, db, fmt.Sprintf("bench_recv_%d", i), end)
			recvRates = append(recvRates, total/time.Since(start).Seconds())
		}
		if i%2 == 0 {
			runStream()
			runRecv()
		} else {
			runRecv()
			runStream()
		}
	}
	b.StopTimer()

	streamRate, recvRate := median(streamRates), median(recvRates)
	b.Logf("stream txn/s %.0f, pg_recvlogical txn/s %.0f", streamRates, recvRates)
	b.ReportMetric(streamRate, "stream_txn/s")
	b.ReportMetric(recvRate, "recvlogical_txn/s")
	b.ReportMetric(streamRate/recvRate, "ratio")
}

// streamSlot reads slot with a Stream until total transactions with
// changes arrived, and returns the seconds it took.
func streamSlot(b *testing.B, db, slot string, total int) float64 {
	b.Helper()
	h := &counter{total: total, done: make(chan struct{})}
	s, err := stream.New(stream.Config{ConnString: db, Slot: slot, Publication: "pub", HeartbeatInterval: -1}, h)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	select {
	case <-h.done:
	case err := <-runErr:
		b.Fatalf("stream ended early: %v", err)
	case <-time.After(10 * time.Minute):
		b.Fatal("stream did not deliver all transactions within 10 minutes")
	}
	secs := time.Since(start).Seconds()
	cancel()
	if err := <-runErr; err != nil {
		b.Fatal(err)
	}
	return secs
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
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

// BenchmarkDecode decodes a single-row transaction like those of
// BenchmarkEndToEnd (Begin, an Insert of three text columns, Commit) over
// and over: the decoder's own cost and allocations per transaction.
func BenchmarkDecode(b *testing.B) {
	be := binary.BigEndian
	rel := be.AppendUint32([]byte{'R'}, 16384)
	rel = append(rel, "public\x00bench0\x00d"...)
	rel = be.AppendUint16(rel, 3)
	for _, c := range []string{"id", "tenant", "v"} {
		rel = append(append(append(rel, 1), c...), 0)
		rel = be.AppendUint32(be.AppendUint32(rel, 25), 0xFFFFFFFF)
	}
	const lsn, end = 0x1A2B3C8, 0x1A2B3F8
	begin := be.AppendUint32(be.AppendUint64(be.AppendUint64([]byte{'B'}, lsn), 1), 741)
	ins := be.AppendUint16(append(be.AppendUint32([]byte{'I'}, 16384), 'N'), 3)
	for _, v := range []string{"12345", "0", "value 12345"} {
		ins = append(be.AppendUint32(append(ins, 't'), uint32(len(v))), v...)
	}
	commit := be.AppendUint64(be.AppendUint64(be.AppendUint64([]byte{'C', 0}, lsn), end), 1)
	d := stream.NewDecoder()
	if _, err := d.Decode(rel); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range [][]byte{begin, ins, commit} {
			if _, err := d.Decode(m); err != nil {
				b.Fatal(err)
			}
		}
	}
}
