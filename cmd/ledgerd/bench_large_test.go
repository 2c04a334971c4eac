package main_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// The large-transaction benchmark's consumer runs in a process of its own
// (this test binary started again with LEDGERD_BENCH_CONSUMER set), so that
// its memory is measured apart from the benchmark's.
func init() {
	if os.Getenv("LEDGERD_BENCH_CONSUMER") == "" {
		return
	}
	if err := benchConsumer(); err != nil {
		fmt.Fprintln(os.Stderr, "bench consumer:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// benchConsumer registers, creates its shape, says "ready" on stdout and
// handles parts with client.RunParts until SIGTERM, counting rows.
func benchConsumer() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	c, err := client.New(client.Config{URL: os.Getenv("LEDGERD_BENCH_URL"), Token: testToken})
	if err != nil {
		return err
	}
	k, err := c.Register(ctx, client.ConsumerConfig{ID: "bench", TTL: 30 * time.Minute})
	if err != nil {
		return err
	}
	if _, err := k.PutShape(ctx, "bench", os.Getenv("LEDGERD_BENCH_TABLE"), nil); err != nil {
		return err
	}
	fmt.Println("ready")
	var rows int
	err = k.RunParts(ctx, func(_ context.Context, txn *client.Txn) error {
		if txn.Part == 1 {
			rows = 0
		}
		rows += len(txn.Changes)
		if txn.Last {
			fmt.Fprintln(os.Stderr, "transaction", txn.LSN, "rows", rows)
		}
		return nil
	}, client.RunOptions{ReconnectMax: 100 * time.Millisecond})
	return err
}

// peakRSS is a process's peak resident set (VmHWM in /proc/PID/status), in
// bytes: the whole process, heap, stacks, buffers and binary alike.
func peakRSS(tb testing.TB, pid int) int64 {
	return procStatus(tb, pid, "VmHWM:")
}

func procStatus(tb testing.TB, pid int, key string) int64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}

// benchRows is the size of the large transaction: LEDGERD_BENCH_ROWS, or
// 5 million.
func benchRows(b *testing.B) int {
	if s := os.Getenv("LEDGERD_BENCH_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("LEDGERD_BENCH_ROWS=%q: want a positive integer", s)
		}
		return n
	}
	return 5_000_000
}

// BenchmarkLargeTransaction measures memory for one transaction of
// millions of rows (~45 bytes of text each). Tracked: the rows reach one
// shape of one consumer built on client/ (RunParts) in its own process;
// ledgerd runs with the default -outbox-bytes and -fragment-bytes. Its
// peak RSS and the consumer's (VmHWM: the whole process) are reported, and
// the time from ledgerd's start to the slot confirming the transaction is
// compared with pg_recvlogical reading a copy of the slot to the same
// position. Untracked: the rows go to a published table no shape follows;
// ledgerd's peak RSS growth over its idle peak is reported. Targets:
// ledgerd <= 256 MiB and the consumer <= 128 MiB tracked, ratio >= 0.8,
// growth <= 32 MiB untracked.
func BenchmarkLargeTransaction(b *testing.B) {
	b.Run("tracked", func(b *testing.B) { benchLargeTxn(b, true) })
	b.Run("untracked", func(b *testing.B) { benchLargeTxn(b, false) })
}

func benchLargeTxn(b *testing.B, tracked bool) {
	ctx := context.Background()
	rows := benchRows(b)
	dsn := pgtest.NewDB(b, cluster)
	slot := slotName(b)
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
	exec1("CREATE TABLE big (id int PRIMARY KEY, v text)")
	exec1("CREATE TABLE followed (id int PRIMARY KEY)")
	exec1(fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE big, followed", slot))
	table := "public.big"
	if !tracked {
		table = "public.followed"
	}

	dbPath := filepath.Join(b.TempDir(), "ledgerd.db")
	addr := freeAddr(b)
	flags := []string{"-status-interval", "200ms", "-log-level", "warn"}
	d := startDaemonOn(b, addr, dsn, slot, dbPath, flags...)
	consumer := exec.Command(os.Args[0], "-test.run=^$")
	consumer.Env = append(os.Environ(), "LEDGERD_BENCH_CONSUMER=1", "LEDGERD_BENCH_URL="+d.url, "LEDGERD_BENCH_TABLE="+table)
	out, err := consumer.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	consumer.Stderr = os.Stderr
	if err := consumer.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = consumer.Process.Signal(syscall.SIGTERM)
		_ = consumer.Wait()
	}()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		b.Fatalf("bench consumer: %q %v", line, err)
	}

	if !tracked {
		// ledgerd stays up: its peak before and after the transaction.
		time.Sleep(2 * time.Second)
		before := peakRSS(b, d.cmd.Process.Pid)
		start := time.Now()
		exec1(fmt.Sprintf("INSERT INTO big SELECT g, repeat('v', 38) FROM generate_series(1, %d) g", rows))
		end := walLSN(b, conn)
		waitConfirmed(b, conn, slot, end)
		after := peakRSS(b, d.cmd.Process.Pid)
		b.Logf("untracked %d rows: ledgerd peak RSS %.1f MiB before, %.1f MiB after (+%.1f MiB), %.1fs from the INSERT to confirmed",
			rows, mib(before), mib(after), mib(after-before), time.Since(start).Seconds())
		b.ReportMetric(mib(after-before), "ledgerd_peak_rss_growth_MiB")
		b.ReportMetric(mib(after), "ledgerd_peak_rss_MiB")
		d.stop()
		return
	}

	// Tracked: ledgerd is stopped while the transaction commits, the slot
	// is copied for pg_recvlogical, and ledgerd starts again on it.
	d.stop()
	exec1(fmt.Sprintf("INSERT INTO big SELECT g, repeat('v', 38) FROM generate_series(1, %d) g", rows))
	end := walLSN(b, conn)
	exec1(fmt.Sprintf("SELECT pg_copy_logical_replication_slot('%s', '%s_recv')", slot, slot))
	exec1("CHECKPOINT")
	recvStart := time.Now()
	recv := exec.Command(filepath.Join(cluster.BinDir(), "pg_recvlogical"), "-d", dsn, "--slot", slot+"_recv",
		"--start", "--endpos", end.String(), "--no-loop", "-o", "proto_version=1", "-o", "publication_names="+slot, "-f", "/dev/null")
	if o, err := recv.CombinedOutput(); err != nil {
		b.Fatalf("pg_recvlogical: %v\n%s", err, o)
	}
	recvSecs := time.Since(recvStart).Seconds()

	start := time.Now()
	d = startDaemonOn(b, addr, dsn, slot, dbPath, flags...)
	waitConfirmed(b, conn, slot, end)
	secs := time.Since(start).Seconds()
	ledgerdPeak := peakRSS(b, d.cmd.Process.Pid)
	consumerPeak := peakRSS(b, consumer.Process.Pid)
	ledgerdCPU, consumerCPU := cpuSecs(b, d.cmd.Process.Pid), cpuSecs(b, consumer.Process.Pid)
	d.stop()
	b.Logf("tracked %d rows: ledgerd %.1fs (%.1fs CPU), peak RSS %.1f MiB; consumer peak RSS %.1f MiB (%.1fs CPU); pg_recvlogical %.1fs; ratio %.2f",
		rows, secs, ledgerdCPU, mib(ledgerdPeak), mib(consumerPeak), consumerCPU, recvSecs, recvSecs/secs)
	b.ReportMetric(mib(ledgerdPeak), "ledgerd_peak_rss_MiB")
	b.ReportMetric(mib(consumerPeak), "consumer_peak_rss_MiB")
	b.ReportMetric(recvSecs/secs, "ratio")
	b.ReportMetric(float64(rows)/secs, "ledgerd_rows/s")
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// cpuSecs is the CPU time a process used so far (user and system, from
// /proc/PID/stat), assuming the usual 100 clock ticks a second.
func cpuSecs(tb testing.TB, pid int) float64 {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

func walLSN(b *testing.B, conn *pgx.Conn) ledger.LSN {
	b.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		b.Fatal(err)
	}
	l, err := ledger.ParseLSN(s)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func waitConfirmed(b *testing.B, conn *pgx.Conn, slot string, end ledger.LSN) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Minute)
	for confirmedFlushB(b, conn, slot) < end {
		if time.Now().After(deadline) {
			b.Fatalf("the slot did not confirm %s within 30 minutes", end)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
