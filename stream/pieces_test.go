package stream_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// pieceRecorder records the pieces a stream hands over. Once block is set,
// the handler blocks on the piece numbered block of the first transaction
// with several pieces until release is closed.
type pieceRecorder struct {
	*recorder
	mu      sync.Mutex
	block   int
	blocked chan struct{}
	release chan struct{}
}

func (p *pieceRecorder) HandleTxn(ctx context.Context, txn *stream.Txn) error {
	p.mu.Lock()
	wait := p.block != 0 && txn.Part == p.block
	if wait {
		p.block = 0
	}
	p.mu.Unlock()
	if wait {
		close(p.blocked)
		<-p.release
	}
	p.recorder.mu.Lock()
	p.recorder.txns = append(p.recorder.txns, txn)
	if !txn.More {
		p.recorder.last = max(p.recorder.last, txn.EndLSN)
	}
	p.recorder.mu.Unlock()
	return nil
}

// assemble puts the recorded pieces together per transaction, checking
// that each transaction's pieces are numbered from 1 in order, that only
// the last one has EndLSN, and that a first piece starts the transaction
// over. It returns, per commit LSN, the row ids and how many times the
// transaction started.
func assemble(t *testing.T, txns []*stream.Txn) (ids map[ledger.LSN][]int, starts map[ledger.LSN]int, pieces map[ledger.LSN]int) {
	t.Helper()
	ids, starts, pieces = map[ledger.LSN][]int{}, map[ledger.LSN]int{}, map[ledger.LSN]int{}
	var cur *stream.Txn
	for _, x := range txns {
		if x.First() {
			ids[x.CommitLSN] = nil
			starts[x.CommitLSN]++
		} else if cur == nil || cur.CommitLSN != x.CommitLSN || x.Part != cur.Part+1 || !cur.More {
			t.Fatalf("piece %d of %s after %+v", x.Part, x.CommitLSN, cur)
		}
		if x.More == (x.EndLSN != 0) {
			t.Errorf("piece %d of %s: More %v with EndLSN %s", x.Part, x.CommitLSN, x.More, x.EndLSN)
		}
		for _, ch := range x.Changes {
			id, _ := strconv.Atoi(ch.New[0].Value)
			ids[x.CommitLSN] = append(ids[x.CommitLSN], id)
		}
		pieces[x.CommitLSN] = x.Part
		cur = x
	}
	return ids, starts, pieces
}

// TestLargeTransactionInPieces: with ChunkBytes set, a large transaction
// is handed over in pieces as it is decoded (same commit LSN, Part from 1,
// More on all but the last, EndLSN on the last only), and a session cut
// inside it hands it again from its first piece; the flush never passes it
// until its last piece was handled.
func TestLargeTransactionInPieces(t *testing.T) {
	e := newEnv(t)
	e.cfg.ChunkBytes = 64 << 10
	e.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
	h := &pieceRecorder{recorder: newRecorder(true), block: 3, blocked: make(chan struct{}), release: make(chan struct{})}
	e.start(h)
	const n = 200_000 // more than the socket buffers hold: the cut comes inside it
	e.exec("INSERT INTO t VALUES (0, 'small')")
	e.exec(fmt.Sprintf("INSERT INTO t SELECT g, repeat('x', 30) FROM generate_series(1, %d) g", n))

	<-h.blocked
	var pid int32
	if err := e.sql.QueryRow(context.Background(),
		"SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1", e.cfg.Slot).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	e.exec("SELECT pg_terminate_backend($1)", pid)
	close(h.release)

	var big ledger.LSN
	waitFor(t, "the large transaction to be handed over whole", func() bool {
		txns := h.snapshot()
		if len(txns) == 0 {
			return false
		}
		last := txns[len(txns)-1]
		big = last.CommitLSN
		return !last.More && last.Part > 1
	})
	ids, starts, pieces := assemble(t, h.snapshot())
	if len(ids[big]) != n || ids[big][0] != 1 || ids[big][n-1] != n {
		t.Errorf("the large transaction came with %d rows, want 1..%d", len(ids[big]), n)
	}
	for i, id := range ids[big] {
		if id != i+1 {
			t.Fatalf("row %d is id %d, want %d: rows out of order or repeated", i, id, i+1)
		}
	}
	if starts[big] != 2 {
		t.Errorf("the large transaction started %d times, want 2 (once more after the cut)", starts[big])
	}
	if pieces[big] < 10 {
		t.Errorf("the large transaction came in %d pieces, want many with ChunkBytes 64 KiB", pieces[big])
	}
	if len(ids) != 2 {
		t.Errorf("transactions handed over: %d, want the small one and the large one", len(ids))
	}
}
