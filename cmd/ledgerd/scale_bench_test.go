package main_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/client"
)

// Scale: shapes spread over scaleConsumers consumers and scaleTables tables,
// shape k owned by consumer c = k%1000, on table k%10 with the filter
// tenant = k/10 (every shape its own table and tenant), with id
// "c<c>:s<k>": a consumer's shapes are neighbours in the ledger file, as
// ids a consumer names after itself are (BenchmarkPutShapes, ledger, shows
// what ids spread over the key space cost).
const (
	scaleConsumers = 1000
	scaleTables    = 10
	scaleStreaming = 8 // consumers streaming in the delivery phase
)

// BenchmarkScale builds a ledger of N shapes through the batch call
// (PUT /v1/consumers/{id}/shapes) on the real binary and real Postgres and
// reports whole-process figures of ledgerd:
//
//   - register_shapes/s: shapes created per second over the batch calls (1000
//     shapes a call, 16 calls at a time), consumers registered beforehand;
//   - idle_cores: CPU time of the process (utime+stime of /proc/PID/stat)
//     over 10 s with nothing happening, in cores;
//   - heap_B/shape: heap in use after a forced collection (POST
//     /v1/debug/gc), divided by N; rss_MB: resident memory then;
//   - lease_evict_s: from the registration of a consumer with a 2 s lease
//     that never heartbeats to its shape answering 410, among the N shapes
//     (at most the TTL plus one reconcile interval, 1 s);
//   - sigterm_exit_s: SIGTERM to process exit with N shapes, idle;
//     sigterm_exit_after_stream_s: the same once the delivery phase is over;
//   - start_ready_s: process start to /readyz 200 on a restart with N shapes
//     and benchTxns transactions waiting in the slot;
//   - ratio: the end-to-end delivery rate of those transactions to the
//     scaleStreaming consumers, each row matching one of their shapes,
//     against pg_recvlogical (see BenchmarkEndToEnd).
//
// The setup dominates, so each case runs once whatever b.N.
// LEDGERD_SCALE_SHAPES (e.g. "1000,100000") replaces the sizes.
func BenchmarkScale(b *testing.B) {
	sizes := []int{1_000, 1_000_000}
	if v := os.Getenv("LEDGERD_SCALE_SHAPES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				b.Fatalf("LEDGERD_SCALE_SHAPES=%q: want sizes like 1000,100000", v)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("shapes=%d", n), func(b *testing.B) { benchScale(b, n) })
	}
}

func benchScale(b *testing.B, n int) {
	r := newE2EBench(b, scaleTables)
	d := r.start()
	ks := r.register(d, scaleConsumers, time.Hour)
	items := make([][]wire.ShapeItem, scaleConsumers)
	for k := range n {
		c := k % scaleConsumers
		items[c] = append(items[c], wire.ShapeItem{ID: fmt.Sprintf("c%d:s%07d", c, k), Table: r.names[k%scaleTables],
			Filter: map[string][]string{"tenant": {strconv.Itoa(k / scaleTables)}}})
	}
	began := time.Now()
	r.putShapes(ks, items, 16)
	reg := float64(n) / time.Since(began).Seconds()
	items = nil
	b.Logf("%d shapes registered in %v (%.0f shapes/s)", n, time.Since(began).Round(time.Millisecond), reg)

	pid := d.cmd.Process.Pid
	time.Sleep(3 * time.Second) // let the registration's garbage be collected
	cpu := idleCores(b, pid, 10*time.Second)
	var gc wire.GCResponse
	if _, err := d.c.Do(r.ctx, http.MethodPost, "/v1/debug/gc", "", nil, &gc); err != nil {
		b.Fatal(err)
	}
	if gc.Shapes != n {
		b.Errorf("%d live shapes, want %d", gc.Shapes, n)
	}
	rss := rssBytes(b, pid)
	evict := leaseExpiry(b, d, 2*time.Second, time.Second)
	stop := d.stopWithin(5 * time.Minute)

	// Rows for the streaming consumers' shapes only: row i reaches shape
	// (i%8) + 1000*((i/8) % (n/1000)), owned by consumer i%8, on table i%8.
	per := max(n/scaleConsumers, 1)
	r.commitTxns(fmt.Sprintf("i %% %d", scaleStreaming),
		fmt.Sprintf("(((i %% %d) + %d * ((i / %d) %% %d)) / %d)::text", scaleStreaming, scaleConsumers, scaleStreaming, per, scaleTables))
	rate, ready := r.stream(ks[:scaleStreaming])

	b.Logf("%d shapes: register %.0f shapes/s, idle %.4f cores, heap %.0f B/shape, rss %.0f MB, lease evicted after %.2fs, "+
		"SIGTERM->exit %.2fs idle and %.2fs after streaming, start->ready %.2fs, delivery %.0f txn/s",
		n, reg, cpu, float64(gc.HeapInuseBytes)/float64(n), float64(rss)/(1<<20), evict.Seconds(), stop.Seconds(),
		r.stopped.Seconds(), ready.Seconds(), rate)
	b.ReportMetric(reg, "register_shapes/s")
	b.ReportMetric(cpu, "idle_cores")
	b.ReportMetric(float64(gc.HeapInuseBytes)/float64(n), "heap_B/shape")
	b.ReportMetric(float64(rss)/(1<<20), "rss_MB")
	b.ReportMetric(evict.Seconds(), "lease_evict_s")
	b.ReportMetric(stop.Seconds(), "sigterm_exit_s")
	b.ReportMetric(r.stopped.Seconds(), "sigterm_exit_after_stream_s")
	b.ReportMetric(ready.Seconds(), "start_ready_s")
	r.report(rate)
	if limit := 3 * time.Second; evict > limit+250*time.Millisecond {
		b.Errorf("a lease expired among %d shapes: its shape was evicted after %v, want within the TTL plus one reconcile interval (%v)", n, evict, limit)
	}
}

// idleCores returns the CPU time process pid used over d, in cores.
func idleCores(b *testing.B, pid int, d time.Duration) float64 {
	before := cpuTicks(b, pid)
	start := time.Now()
	time.Sleep(d)
	ticks := cpuTicks(b, pid) - before
	return float64(ticks) / 100 / time.Since(start).Seconds() // USER_HZ is 100 on Linux
}

// cpuTicks is utime+stime of /proc/PID/stat, in clock ticks.
func cpuTicks(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // fields[0] is field 3 (state)
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		b.Fatalf("reading /proc/%d/stat: %v", pid, err)
	}
	return utime + stime
}

// rssBytes is VmRSS of /proc/PID/status.
func rssBytes(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// leaseExpiry registers a consumer with lease ttl that never heartbeats,
// gives it one shape, and returns the time from its registration to the
// shape answering 410 (evicted), polling every poll/20.
func leaseExpiry(tb testing.TB, d *daemon, ttl, poll time.Duration) time.Duration {
	tb.Helper()
	ctx := context.Background()
	start := time.Now()
	k, err := d.c.Register(ctx, client.ConsumerConfig{ID: "expiring", TTL: ttl})
	if err != nil {
		tb.Fatal(err)
	}
	res, err := k.PutShapes(ctx, []wire.ShapeItem{{ID: "expiring-shape", Table: "public.bench0"}})
	if err != nil || res.Shapes[0].Status != http.StatusCreated {
		tb.Fatalf("shape of the expiring consumer: %+v %v", res, err)
	}
	deadline := start.Add(ttl + 30*time.Second)
	for time.Now().Before(deadline) {
		_, err := d.c.Do(ctx, http.MethodGet, "/v1/shapes/expiring-shape", "", nil, nil)
		var ce *client.Error
		if errors.As(err, &ce) && ce.Status == http.StatusGone {
			return time.Since(start)
		}
		time.Sleep(poll / 20)
	}
	tb.Fatalf("the shape of a consumer whose %v lease expired was not evicted within %v", ttl, ttl+30*time.Second)
	return 0
}
