package client_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// pieces cuts a transaction of rows 1..n on public.t into stream pieces of
// per rows each.
func pieces(lsn ledger.LSN, n, per int) []*stream.Txn {
	var out []*stream.Txn
	for i := 1; i <= n; i += per {
		p := &stream.Txn{Xid: uint32(lsn), CommitLSN: lsn, Part: len(out) + 1, More: true}
		for j := i; j < i+per && j <= n; j++ {
			p.Changes = append(p.Changes, stream.Change{Op: stream.OpInsert, Table: "public.t",
				New: []stream.Column{{Name: "id", Value: fmt.Sprint(j)}}})
		}
		out = append(out, p)
	}
	out[len(out)-1].More, out[len(out)-1].EndLSN = false, lsn+8
	return out
}

// TestRunPartsAcksAfterLastPart: RunParts hands each part over as it is
// read and acks the transaction once, after its last part. When the stream
// is cut inside the transaction (the daemon's replication stream restarted
// it), the handler gets part 1 again and then the whole transaction.
func TestRunPartsAcksAfterLastPart(t *testing.T) {
	d := newDaemon(t, func(c *deliver.Config) { c.FragmentBytes = 1024 })
	k, _ := d.consumer("c", "s")
	const lsn = ledger.LSN(0x1000)
	ps := pieces(lsn, 300, 50)

	var mu sync.Mutex
	var parts []int
	var ids []int
	got := make(chan *client.Txn, 1000)
	acked := make(chan map[string]ledger.LSN, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- k.RunParts(ctx, func(_ context.Context, txn *client.Txn) error {
			mu.Lock()
			defer mu.Unlock()
			if txn.Part == 1 {
				ids = nil // start the transaction over
			}
			parts = append(parts, txn.Part)
			for _, ch := range txn.Changes {
				id, _ := strconv.Atoi(*ch.New["id"])
				ids = append(ids, id)
			}
			got <- txn
			return nil
		}, client.RunOptions{OnAck: func(a map[string]ledger.LSN, _ ledger.LSN) { acked <- a }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	for _, p := range ps[:2] {
		if err := d.hub.HandleTxn(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if txn := <-got; txn.Last || txn.LSN != lsn {
			t.Fatalf("got %+v, want a part of %s before its last", txn, lsn)
		}
	}
	if sh, _ := d.l.Shape("s"); sh.FlushedLSN >= lsn {
		t.Fatalf("shape flushed %s before the last part was handled", sh.FlushedLSN)
	}
	// The replication stream restarts the transaction: the client's stream
	// is closed and the transaction comes again from part 1.
	for _, p := range ps {
		if err := d.hub.HandleTxn(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for txn := range got {
		if txn.Last {
			break
		}
	}
	if a := <-acked; a["s"] != lsn || len(a) != 1 {
		t.Errorf("acked %v, want s at %s", a, lsn)
	}
	mu.Lock()
	defer mu.Unlock()
	restarts := 0
	for _, p := range parts {
		if p == 1 {
			restarts++
		}
	}
	if restarts != 2 || len(ids) != 300 || ids[0] != 1 || ids[299] != 300 {
		t.Errorf("parts %v, %d rows after the last start; want part 1 twice and rows 1..300", parts, len(ids))
	}
	for i, id := range ids {
		if id != i+1 {
			t.Fatalf("row %d is %d: rows out of order or repeated", i, id)
		}
	}
}
