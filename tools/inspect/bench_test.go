package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/internal/clocktest"
	"github.com/ledgerd/ledgerd/ledger"
)

// buildWide writes a ledger with n shapes over n/10 consumers; every other
// shape never acks the first transaction, so half the shapes are candidate
// holders in the file.
func buildWide(tb testing.TB, path string, n int) {
	tb.Helper()
	clk := clocktest.New(t0)
	l := must(ledger.Open(ledger.Config{Path: path, Identity: testIdentity, Clock: clk, Logger: zerolog.Nop()}))
	ids := make([]string, n)
	for i := range n / 10 {
		must(l.Register(ledger.ConsumerSpec{ID: fmt.Sprintf("c%04d", i), TTL: time.Duration(i+1) * time.Second}))
	}
	for i := range n {
		ids[i] = fmt.Sprintf("s%06d", i)
		_, _, err := l.PutShape(ledger.ShapeSpec{ID: ids[i], Consumer: fmt.Sprintf("c%04d", i/10), Table: "public.t"})
		check(tb, err)
	}
	l.Track(0x1000, 0x1050, ids)
	for i := 0; i < n; i += 2 {
		check(tb, l.Ack(ids[i], 0x1000))
	}
	l.Track(0x2000, 0x2050, ids[:1])
	check(tb, l.Ack(ids[0], 0x2000))
	for range 3 {
		check(tb, l.Sync(context.Background()))
		l.FlushLSN()
	}
	check(tb, l.Close())
}

// TestHoldersLimit: holders lists the worst -limit and says how many more.
func TestHoldersLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledgerd.db")
	buildWide(t, path, 40)
	r := runInspect(t, nil, "-db", path, "holders", "-limit", "3")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := strings.Count(r.stdout, "possible holder "); got != 3 || !strings.Contains(r.stdout, "and 17 more") {
		t.Errorf("want 3 holders listed and 17 more counted:\n%s", r.stdout)
	}
	// Expired leases first: consumer c0000 (ttl 1s) is the worst.
	if !strings.Contains(r.stdout, "1. possible holder s000001 (consumer c0000") {
		t.Errorf("the first holder is not the expired consumer's shape:\n%s", r.stdout)
	}
}

// BenchmarkHolders measures inspect holders -json on a file with 100k
// shapes (50k candidate holders), load included.
func BenchmarkHolders(b *testing.B) {
	path := filepath.Join(b.TempDir(), "ledgerd.db")
	const n = 100000
	buildWide(b, path, n)
	env := Env{Stdout: io.Discard, Stderr: io.Discard, Now: func() time.Time { return inspectNow }}
	for b.Loop() {
		if code := Main(context.Background(), []string{"-db", path, "-json", "holders", "-limit", "0"}, env); code != exitOK {
			b.Fatalf("exit %d", code)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "shapes/s")
}
