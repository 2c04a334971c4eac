package ledger

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// Internal benchmarks: the tracker without bbolt, its memory per shape, and
// opening a large file built directly (creating a million shapes one
// PutShape at a time would take an fsync each).

func shapeID(i int) string { return fmt.Sprintf("shape-%07d", i) }

// newTrackerWith returns a tracker holding n live shapes, each with one
// pending transaction, so the heap holds every shape.
func newTrackerWith(n int) (*tracker, [][]string, LSN) {
	t := newTracker()
	def := newInterner().def("public.items", 0, "")
	ids := make([][]string, n)
	for i := range n {
		id := shapeID(i)
		ids[i] = []string{id}
		t.add(&shapeState{id: id, consumer: "consumer-1", Def: def, heapIdx: -1})
	}
	lsn := LSN(1000)
	for i := range n {
		lsn += 16
		t.track(lsn, lsn+8, ids[i], 1)
	}
	return t, ids, lsn
}

// BenchmarkTrackerAck measures the in-memory path of one acknowledged
// transaction: Track of a transaction to one shape and the Ack of that
// shape's oldest pending entry, with every shape pending (the minimum moves
// through a heap of n entries). Target: >= 1M acks/s at 100k shapes.
func BenchmarkTrackerAck(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("shapes=%d", n), func(b *testing.B) {
			t, ids, lsn := newTrackerWith(n)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				lsn += 16
				t.track(lsn, lsn+8, ids[i], 2)
				s := t.shapes.Get(ids[i][0])
				t.ack(s, s.firstPending().lsn)
				if i++; i == n {
					i = 0
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acks/s")
			if got := t.safe(); got == 0 {
				b.Fatal("nothing pending")
			}
		})
	}
}

// BenchmarkHeapPerShape measures the heap held per tracked shape (its record,
// id, map entry, heap slot and one pending entry). Target: <= 256 B.
func BenchmarkHeapPerShape(b *testing.B) {
	const n = 1_000_000
	var per float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		t, _, _ := newTrackerWith(n) // the id slices are the benchmark's, not the tracker's
		runtime.GC()
		runtime.ReadMemStats(&after)
		per = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(t)
	}
	b.ReportMetric(per, "B/shape")
}

// buildLedgerFile writes a ledger with n shapes (owned by one consumer, all
// acked once) straight through bbolt, in large transactions.
func buildLedgerFile(b *testing.B, path string, n int) Config {
	cfg := Config{Path: path, Identity: Identity{SystemID: "1", Slot: "ledgerd"}, Logger: zerolog.Nop()}
	l, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := l.Register(ConsumerSpec{ID: "consumer-1", TTL: time.Hour}); err != nil {
		b.Fatal(err)
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UnixNano()
	const chunk = 100_000
	def := newInterner().def("public.items", 0, "")
	for lo := 0; lo < n; lo += chunk {
		err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketShapes)
			bk.FillPercent = 1.0
			for i := lo; i < min(n, lo+chunk); i++ {
				s := &shapeState{id: shapeID(i), consumer: "consumer-1", Def: def, gen: 1,
					start: 100, flushed: LSN(200 + i), created: now, lastAck: now}
				if err := put(bk, []byte(s.id), encodeShape(s)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	return cfg
}

// BenchmarkOpen1M measures Open (load and restart rules) of a ledger with a
// million shapes, and the heap it then holds per shape. Target: <= 2 s.
func BenchmarkOpen1M(b *testing.B) {
	const n = 1_000_000
	cfg := buildLedgerFile(b, filepath.Join(b.TempDir(), "ledger.db"), n)
	var heapPer float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		l, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if got := l.t.shapes.Len(); got != n {
			b.Fatalf("%d shapes loaded", got)
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		heapPer = float64(after.HeapAlloc-before.HeapAlloc) / n
		b.StartTimer()
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/open")
	b.ReportMetric(heapPer, "heapB/shape")
}

// BenchmarkDurableAcks measures acks made durable through the group commit:
// many concurrent ackers, each tracking and acking its own shapes and waiting
// for durability (Sync) every 16 acks, as the HTTP ack handler does.
// Target: >= 200k durable acks/s.
func BenchmarkDurableAcks(b *testing.B) {
	const shapes, ackers, perSync = 100_000, 256, 16
	cfg := buildLedgerFile(b, filepath.Join(b.TempDir(), "ledger.db"), shapes)
	l, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ids := make([][]string, shapes)
	for i := range ids {
		ids[i] = []string{shapeID(i)}
	}
	var next atomic.Uint64
	next.Store(1 << 40)
	per := b.N/ackers + 1
	var failed atomic.Value
	b.ResetTimer()
	var wg sync.WaitGroup
	for g := range ackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := g
			for i := range per {
				id := ids[k]
				lsn := LSN(next.Add(16))
				l.Track(lsn, lsn+8, id)
				if err := l.Ack(id[0], lsn); err != nil {
					failed.Store(err)
					return
				}
				if k += ackers; k >= shapes {
					k = g
				}
				if i%perSync == perSync-1 || i == per-1 {
					if err := l.Sync(context.Background()); err != nil {
						failed.Store(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per*ackers)/b.Elapsed().Seconds(), "acks/s")
	l.mu.Lock()
	commits := l.fill.id - 1
	l.mu.Unlock()
	b.ReportMetric(float64(per*ackers)/float64(commits), "acks/commit")
}
