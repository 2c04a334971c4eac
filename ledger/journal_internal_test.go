package ledger

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// journalDB returns a bbolt file whose journal holds n events, the i-th
// (from 0) at t0 plus i seconds.
func journalDB(tb testing.TB, n int, t0 time.Time) *bolt.DB {
	tb.Helper()
	db, err := bolt.Open(filepath.Join(tb.TempDir(), "journal.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	const per = 100_000
	for from := 0; from < n; from += per {
		err := db.Update(func(tx *bolt.Tx) error {
			if _, err := tx.CreateBucketIfNotExists(bucketJournal); err != nil {
				return err
			}
			j := newJournal(tx, t0)
			for i := from; i < min(n, from+per); i++ {
				if err := j.add(Event{Time: t0.Add(time.Duration(i) * time.Second), Kind: EventChallenged,
					Shape: fmt.Sprintf("s%d", i)}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	return db
}

// journalSeqs returns the first and last sequence numbers and the count.
func journalSeqs(tb testing.TB, db *bolt.DB) (first, last uint64, n int) {
	tb.Helper()
	err := db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketJournal).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if n == 0 {
				first = binary.BigEndian.Uint64(k)
			}
			last = binary.BigEndian.Uint64(k)
			n++
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return first, last, n
}

// TestTrimJournalLeavesTheBound: trimming a journal that holds several runs
// of trimBatch events more than its bound leaves exactly the newest
// maxEvents, contiguous, and then the age bound removes exactly the events
// older than it.
func TestTrimJournalLeavesTheBound(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	total := 3*trimBatch + 7
	db := journalDB(t, total, t0)
	const bound = 1000
	now := t0.Add(time.Duration(total) * time.Second)
	var deleted int
	err := db.Update(func(tx *bolt.Tx) error {
		var err error
		deleted, err = trimJournal(tx, now, bound, 365*24*time.Hour)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	first, last, n := journalSeqs(t, db)
	if deleted != total-bound || n != bound || last != uint64(total) || first != uint64(total-bound+1) {
		t.Fatalf("after trimming %d events to %d: deleted %d, left %d (seq %d..%d), want seq %d..%d",
			total, bound, deleted, n, first, last, total-bound+1, total)
	}

	// By age: events are a second apart; keep the last 300 seconds.
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		deleted, err = trimJournal(tx, now, bound, 300*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if first, last, n = journalSeqs(t, db); n != 300 || deleted != bound-300 || last != uint64(total) {
		t.Fatalf("after trimming by age: deleted %d, left %d (seq %d..%d), want the last 300", deleted, n, first, last)
	}
}

// BenchmarkTrimJournal measures one trim of a journal a million events over
// its bound (a backlog left by a version that journaled every creation).
// Target: <= 2 s for the million.
func BenchmarkTrimJournal(b *testing.B) {
	const backlog, bound = 1_000_000, 1000
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for b.Loop() {
		b.StopTimer()
		db := journalDB(b, backlog+bound, t0)
		b.StartTimer()
		began := time.Now()
		err := db.Update(func(tx *bolt.Tx) error {
			n, err := trimJournal(tx, t0.Add(time.Hour), bound, 365*24*time.Hour)
			if err == nil && n != backlog {
				err = fmt.Errorf("trimmed %d events, want %d", n, backlog)
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(began).Seconds(), "s/1M-events")
	}
}
