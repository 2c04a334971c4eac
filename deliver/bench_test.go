package deliver_test

import (
	"context"
	"fmt"
	"io"
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
	l, err := ledger.Open(ledger.Config{Path: b.TempDir() + "/l.db", Identity: ledger.Identity{SystemID: "1", Slot: "s"}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	h := deliver.New(deliver.Config{Ledger: l, KeepaliveInterval: time.Hour})
	defer h.Close()
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
