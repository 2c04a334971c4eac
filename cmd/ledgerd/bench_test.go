package main_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/api/wire"
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
	// Over TCP the walsender caps both readers alike; over the Unix socket
	// ledgerd's own cost shows.
	b.Run("1consumer_1shape_unix", func(b *testing.B) { benchEndToEnd(b, 1, 1, 1, unixSocket) })
}

// unixSocket makes a benchmark case connect ledgerd and pg_recvlogical
// over the cluster's Unix socket instead of TCP.
func unixSocket(r *e2eBench) {
	r.dsn = cluster.SocketConnString(pgtest.DBName(r.b.Name()))
}

func benchEndToEnd(b *testing.B, consumers, shapes, tables int, opts ...func(*e2eBench)) {
	r := newE2EBench(b, tables)
	for _, o := range opts {
		o(r)
	}

	// Phase 1: consumers and shapes on the empty slot. Shape k follows table
	// k%tables and, with more than one shape, tenant k/tables: every row
	// reaches exactly one shape.
	d := r.start()
	ks := r.register(d, consumers, 5*time.Minute)
	items := make([][]wire.ShapeItem, consumers)
	for k := range shapes {
		var filter map[string][]string
		if shapes > 1 {
			filter = map[string][]string{"tenant": {fmt.Sprint(k / tables)}}
		}
		items[k%consumers] = append(items[k%consumers], wire.ShapeItem{ID: fmt.Sprintf("s%04d", k), Table: r.names[k%tables], Filter: filter})
	}
	r.putShapes(ks, items, 1)
	d.stop()

	tenants := max(shapes/tables, 1)
	r.commitTxns(fmt.Sprintf("i %% %d", tables), fmt.Sprintf("((i / %d) %% %d)::text", tables, tenants))
	rate, _ := r.stream(ks)
	r.report(rate)
}

// e2eBench is a database, its tables and publication, and the ledger file
// of one end-to-end benchmark case.
type e2eBench struct {
	b      *testing.B
	ctx    context.Context
	dsn    string
	slot   string
	conn   *pgx.Conn
	names  []string
	dbPath string
	addr   string
	flags  []string
	end    string // WAL position after the transactions
	recvs  []float64
	// recvWalCPU is the CPU seconds of the walsender serving each
	// pg_recvlogical run.
	recvWalCPU []float64
	// stopped is how long ledgerd took to exit on SIGTERM after the
	// consumers of stream stopped.
	stopped time.Duration
}

// newE2EBench creates tables bench0..bench<tables-1> (id, tenant, v) and a
// publication of them.
func newE2EBench(b *testing.B, tables int) *e2eBench {
	ctx := context.Background()
	dsn := pgtest.NewDB(b, cluster)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(ctx) })
	r := &e2eBench{b: b, ctx: ctx, dsn: dsn, slot: strings.TrimPrefix(pgtest.DBName(b.Name()), "t_"), conn: conn,
		dbPath: filepath.Join(b.TempDir(), "ledgerd.db"), addr: freeAddr(b),
		flags: []string{"-status-interval", "200ms", "-log-level", "warn"}}
	for i := range tables {
		r.exec(fmt.Sprintf("CREATE TABLE bench%d (id int PRIMARY KEY, tenant text, v text)", i))
		r.names = append(r.names, fmt.Sprintf("public.bench%d", i))
	}
	r.exec(fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", r.slot, strings.Join(r.names, ", ")))
	return r
}

func (r *e2eBench) exec(q string) {
	r.b.Helper()
	if _, err := r.conn.Exec(r.ctx, q); err != nil {
		r.b.Fatalf("%s: %v", q, err)
	}
}

// start runs ledgerd on the case's slot and file and waits until it is ready.
func (r *e2eBench) start(extra ...string) *daemon {
	return startDaemonOn(r.b, r.addr, r.dsn, r.slot, r.dbPath, append(slices.Clone(r.flags), extra...)...)
}

// register registers consumers c0..c<n-1>, workers at a time.
func (r *e2eBench) register(d *daemon, n int, ttl time.Duration) []*client.Consumer {
	ks := make([]*client.Consumer, n)
	r.parallel(n, 8, func(i int) error {
		var err error
		ks[i], err = d.c.Register(r.ctx, client.ConsumerConfig{ID: fmt.Sprintf("c%d", i), TTL: ttl})
		return err
	})
	return ks
}

// putShapes creates items[i] for consumer ks[i] with the batch call, in
// calls of at most 1000 shapes, workers calls at a time, and checks that
// each shape was created.
func (r *e2eBench) putShapes(ks []*client.Consumer, items [][]wire.ShapeItem, workers int) {
	type call struct {
		k     *client.Consumer
		items []wire.ShapeItem
	}
	var calls []call
	for i, its := range items {
		for len(its) > 0 {
			n := min(len(its), 1000)
			calls = append(calls, call{ks[i], its[:n]})
			its = its[n:]
		}
	}
	r.parallel(len(calls), workers, func(i int) error {
		res, err := calls[i].k.PutShapes(r.ctx, calls[i].items)
		if err != nil {
			return err
		}
		for _, s := range res.Shapes {
			if s.Status != http.StatusCreated {
				return fmt.Errorf("shape %s: %d %+v", s.ID, s.Status, s.Error)
			}
		}
		return nil
	})
}

// parallel runs f(0..n-1), workers at a time, and fails on the first error.
func (r *e2eBench) parallel(n, workers int, f func(i int) error) {
	r.b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		r.b.Fatal(err)
	}
}

// commitTxns commits benchTxns single-row transactions with ledgerd
// stopped, row i into the table numbered table and with the tenant tenant
// (SQL expressions of i), without waiting for each WAL flush (the benchmark
// is about reading them); then copies the slot twice for pg_recvlogical and
// runs it once on the first copy.
func (r *e2eBench) commitTxns(table, tenant string) {
	var body strings.Builder
	body.WriteString("DO $$ BEGIN FOR i IN 0..")
	fmt.Fprintf(&body, "%d LOOP\n", benchTxns-1)
	body.WriteString("CASE " + table + "\n")
	for t := range r.names {
		fmt.Fprintf(&body, "WHEN %d THEN INSERT INTO bench%d VALUES (i, %s, 'value ' || i);\n", t, t, tenant)
	}
	body.WriteString("END CASE; COMMIT; END LOOP; END $$")
	r.exec("SET synchronous_commit = off")
	r.exec(body.String())
	if err := r.conn.QueryRow(r.ctx, "SELECT pg_current_wal_lsn()::text").Scan(&r.end); err != nil {
		r.b.Fatal(err)
	}
	for i := range 2 {
		r.exec(fmt.Sprintf("SELECT pg_copy_logical_replication_slot('%s', '%s_recv%d')", r.slot, r.slot, i))
	}
	r.exec("CHECKPOINT")
	r.recvs = append(r.recvs, r.recv(0))
}

// recv runs pg_recvlogical on copy i of the slot to the end of the
// transactions and returns its rate.
func (r *e2eBench) recv(i int) float64 {
	slot := fmt.Sprintf("%s_recv%d", r.slot, i)
	start := time.Now()
	cmd := exec.Command(filepath.Join(cluster.BinDir(), "pg_recvlogical"), "-d", r.dsn, "--slot", slot,
		"--start", "--endpos", r.end, "--no-loop", "-o", "proto_version=1", "-o", "publication_names="+r.slot, "-f", "/dev/null")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		r.b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	walCPU := r.followWalsender(slot, done)
	if err := <-done; err != nil {
		r.b.Fatalf("pg_recvlogical: %v\n%s", err, out.String())
	}
	rate := benchTxns / time.Since(start).Seconds()
	r.recvWalCPU = append(r.recvWalCPU, walCPU)
	return rate
}

// followWalsender reads the CPU time of the walsender serving slot every
// few milliseconds until done is ready (which it leaves for the caller to
// receive) and returns the last reading, in seconds: the walsender exits
// with its reader. The walsender shares the cores with the reader, so a
// reader that makes it work harder (more wake-ups, more waits for room in
// the socket) costs the rate.
func (r *e2eBench) followWalsender(slot string, done chan error) float64 {
	conn, err := pgx.Connect(r.ctx, r.dsn)
	if err != nil {
		r.b.Fatal(err)
	}
	defer conn.Close(r.ctx)
	var pid *int
	var ticks int64
	for {
		select {
		case err := <-done:
			done <- err
			return float64(ticks) / clockTicks
		case <-time.After(2 * time.Millisecond):
		}
		if pid == nil {
			if err := conn.QueryRow(r.ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&pid); err != nil {
				r.b.Fatal(err)
			}
			continue
		}
		if t, ok := procTicks(*pid); ok {
			ticks = t
		}
	}
}

// procTicks is cpuTime for a process that may have exited.
func procTicks(pid int) (int64, bool) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s, true
}

// stream starts ledgerd on the slot and runs the consumers ks until they
// received every transaction and the slot's confirmed_flush_lsn reached the
// last one; it returns the rate from process start and the time from
// process start to /readyz. Then ledgerd is stopped and pg_recvlogical runs
// on the second copy.
func (r *e2eBench) stream(ks []*client.Consumer, extra ...string) (rate float64, ready time.Duration) {
	b := r.b
	var received atomic.Int64
	var lastEnd atomic.Uint64
	runCtx, cancel := context.WithCancel(r.ctx)
	var wg sync.WaitGroup
	start := time.Now()
	selfCPU0 := cpuTime(b, os.Getpid())
	d := r.start(extra...)
	stopPerf := perfRecord(b, d.cmd.Process.Pid)
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
	ready = time.Since(start)
	var allReceived time.Duration
	deadline := time.Now().Add(10 * time.Minute)
	for received.Load() < benchTxns || confirmedFlushB(b, r.conn, r.slot) < ledger.LSN(lastEnd.Load()) {
		if allReceived == 0 && received.Load() >= benchTxns {
			allReceived = time.Since(start)
		}
		if time.Now().After(deadline) {
			b.Fatalf("ledgerd did not deliver and confirm %d transactions within 10 minutes (got %d)", benchTxns, received.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	secs := time.Since(start).Seconds()
	stopPerf()
	var walPID int
	if err := r.conn.QueryRow(r.ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", r.slot).Scan(&walPID); err != nil {
		b.Fatal(err)
	}
	walCPU := float64(cpuTime(b, walPID)) / clockTicks
	// CPU time does not depend on what else the machine runs, unlike the
	// rates: ledgerd's, and this process's (the consumers, and the polling
	// of the slot above).
	ledgerdCPU := float64(cpuTime(b, d.cmd.Process.Pid)) / clockTicks
	selfCPU := float64(cpuTime(b, os.Getpid())-selfCPU0) / clockTicks
	b.Logf("ready after %v, all received after %v, confirmed after %.2fs; cpu ledgerd %.2fs, consumers %.2fs, walsender %.2fs", ready, allReceived, secs, ledgerdCPU, selfCPU, walCPU)
	b.ReportMetric(ledgerdCPU, "ledgerd_cpu_s")
	b.ReportMetric(selfCPU, "consumer_cpu_s")
	b.ReportMetric(walCPU, "walsender_cpu_s")
	cancel()
	wg.Wait()
	r.stopped = d.stopWithin(5 * time.Minute)
	if got := received.Load(); got != benchTxns {
		b.Errorf("consumers got %d transactions, want %d", got, benchTxns)
	}
	r.recvs = append(r.recvs, r.recv(1))
	return benchTxns / secs, ready
}

// clockTicks is the unit of cpuTime (USER_HZ, 100 on Linux).
const clockTicks = 100

// perfRecord starts `perf record -g` on ledgerd (pid) and on this process
// (the consumers) when LEDGERD_BENCH_PERF names a directory, writing
// ledgerd.perf and consumer.perf there; the returned func stops both.
func perfRecord(b *testing.B, pid int) (stop func()) {
	dir := os.Getenv("LEDGERD_BENCH_PERF")
	if dir == "" {
		return func() {}
	}
	var cmds []*exec.Cmd
	for name, p := range map[string]int{"ledgerd": pid, "consumer": os.Getpid()} {
		cmd := exec.Command("perf", "record", "-q", "-F", "999", "-g", "-p", strconv.Itoa(p), "-o", filepath.Join(dir, name+".perf"))
		if err := cmd.Start(); err != nil {
			b.Fatalf("perf record: %v", err)
		}
		cmds = append(cmds, cmd)
	}
	return func() {
		for _, cmd := range cmds {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
		}
	}
}

// report reports ledgerd's rate, pg_recvlogical's and their ratio.
func (r *e2eBench) report(rate float64) {
	recvRate := (r.recvs[0] + r.recvs[1]) / 2
	sort.Float64s(r.recvs)
	r.b.Logf("ledgerd end to end %.0f txn/s; pg_recvlogical %.0f txn/s", rate, r.recvs)
	r.b.ReportMetric(rate, "ledgerd_txn/s")
	r.b.ReportMetric(recvRate, "recvlogical_txn/s")
	r.b.ReportMetric(rate/recvRate, "ratio")
	if len(r.recvWalCPU) > 0 {
		var sum float64
		for _, c := range r.recvWalCPU {
			sum += c
		}
		r.b.ReportMetric(sum/float64(len(r.recvWalCPU)), "recvlogical_walsender_cpu_s")
	}
}

// stopWithin sends SIGTERM and returns how long the process took to exit,
// waiting up to limit: a benchmark reports a slow exit rather than failing
// on it.
func (d *daemon) stopWithin(limit time.Duration) time.Duration {
	d.t.Helper()
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			d.t.Errorf("ledgerd exited with %v after SIGTERM", err)
		}
	case <-time.After(limit):
		d.t.Fatalf("ledgerd did not exit within %v of SIGTERM", limit)
	}
	return time.Since(start)
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
