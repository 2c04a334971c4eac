package deliver_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

type discard struct{ io.Writer }

func (discard) Flush() error { return nil }

// BenchmarkHandleTxn measures the delivery path without Postgres or HTTP:
// route, track, enqueue, encode and write one single-row transaction to one
// consumer's stream, acked every 1000 transactions.
func BenchmarkHandleTxn(b *testing.B) {
	l, h := benchHub(b)
	if _, err := l.Register(ledger.ConsumerSpec{ID: "c", TTL: time.Hour}); err != nil {
		b.Fatal(err)
	}
	sh, _, err := l.PutShape(ledger.ShapeSpec{ID: "s", Consumer: "c", Table: "public.t"})
	if err != nil {
		b.Fatal(err)
	}
	h.PutShape(sh)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.Serve(ctx, "c", discard{io.Discard})
	b.ReportAllocs()
	lsn := ledger.LSN(0x1000)
	for i := 0; b.Loop(); i++ {
		lsn += 0x100
		txn := &stream.Txn{Xid: uint32(i), CommitLSN: lsn, EndLSN: lsn + 0x30, CommitTime: time.Now(),
			Changes: []stream.Change{{Op: stream.OpInsert, Table: "public.t",
				New: []stream.Column{{Name: "id", Value: fmt.Sprint(i)}, {Name: "v", Value: "value"}}}}}
		if err := h.HandleTxn(ctx, txn); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			for {
				st, _ := h.Consumer("c")
				if st.Delivered >= lsn {
					break
				}
				time.Sleep(10 * time.Microsecond)
			}
			if _, err := h.Ack(ctx, "c", map[string]ledger.LSN{"s": lsn}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txns/s")
}

// BenchmarkHandleTxnScale is BenchmarkHandleTxn with many shapes, each with
// its own "tenant =" filter, over 1,000 consumers and 10 tables: each
// single-row transaction reaches one shape, so its cost should not grow
// with the number of shapes. Every 1,000 transactions each consumer that
// got one acks it (a group commit each); handle-ns/txn is the time in
// HandleTxn alone. LEDGERD_BENCH_SHAPES overrides the sizes
// (comma-separated).
func BenchmarkHandleTxnScale(b *testing.B) {
	sizes := []int{1000, 100000}
	if v := os.Getenv("LEDGERD_BENCH_SHAPES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("LEDGERD_BENCH_SHAPES=%q: %v", v, err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("shapes=%d", n), func(b *testing.B) { benchScale(b, n) })
	}
}

// benchHub opens a ledger and a Hub on it, both closed when b ends.
func benchHub(b *testing.B) (*ledger.Ledger, *deliver.Hub) {
	l, err := ledger.Open(ledger.Config{Path: b.TempDir() + "/l.db", Identity: ledger.Identity{SystemID: "1", Slot: "s"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	h := deliver.New(deliver.Config{Ledger: l, KeepaliveInterval: time.Hour})
	b.Cleanup(h.Close)
	return l, h
}

func benchScale(b *testing.B, shapes int) {
	const consumers, tables = 1000, 10
	l, h := benchHub(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for c := range consumers {
		if _, err := l.Register(ledger.ConsumerSpec{ID: fmt.Sprintf("c%d", c), TTL: time.Hour}); err != nil {
			b.Fatal(err)
		}
		go h.Serve(ctx, fmt.Sprintf("c%d", c), discard{io.Discard})
	}
	var specs []ledger.ShapeSpec
	for i := range shapes {
		specs = append(specs, ledger.ShapeSpec{ID: fmt.Sprintf("s%d", i), Consumer: fmt.Sprintf("c%d", i%consumers),
			Table: fmt.Sprintf("public.t%d", i%tables), Filter: map[string][]string{"tenant": {strconv.Itoa(i)}}})
		if len(specs) == 10000 || i == shapes-1 {
			if _, err := h.CreateShapes(specs); err != nil {
				b.Fatal(err)
			}
			specs = specs[:0]
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	lsn := ledger.LSN(0x1000)
	touched := map[string]ledger.LSN{}
	var handling time.Duration
	for i := 0; b.Loop(); i++ {
		lsn += 0x100
		k := (i * 7919) % shapes
		txn := &stream.Txn{Xid: uint32(i), CommitLSN: lsn, EndLSN: lsn + 0x30, CommitTime: time.Now(),
			Changes: []stream.Change{{Op: stream.OpInsert, Table: fmt.Sprintf("public.t%d", k%tables),
				New: []stream.Column{{Name: "id", Value: strconv.Itoa(i)}, {Name: "tenant", Value: strconv.Itoa(k)}}}}}
		t0 := time.Now()
		if err := h.HandleTxn(ctx, txn); err != nil {
			b.Fatal(err)
		}
		handling += time.Since(t0)
		touched[fmt.Sprintf("c%d", k%consumers)] = lsn
		if i%1000 == 999 {
			for cid, last := range touched {
				for {
					st, _ := h.Consumer(cid)
					if st.Delivered >= last {
						break
					}
					time.Sleep(10 * time.Microsecond)
				}
				if _, err := h.AckAll(ctx, cid, last); err != nil {
					b.Fatal(err)
				}
			}
			clear(touched)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txns/s")
	b.ReportMetric(float64(handling.Nanoseconds())/float64(b.N), "handle-ns/txn")
}
