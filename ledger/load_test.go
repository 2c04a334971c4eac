package ledger_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	bolt "go.etcd.io/bbolt"
)

func TestLoadReadsWithoutChangingTheFile(t *testing.T) {
	path := closedLedger(t, 10)
	info0, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	before := fileSum(t, path)
	st, err := ledger.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if probs, err := ledger.Verify(path); err != nil || len(probs) != 0 {
		t.Fatalf("verify: %v %v", err, probs)
	}
	info1, _ := os.Stat(path)
	if fileSum(t, path) != before || !info1.ModTime().Equal(info0.ModTime()) {
		t.Fatal("Load or Verify changed the file")
	}
	if st.Meta.Identity != testIdentity || st.Meta.SchemaVersion != ledger.SchemaVersion || st.Meta.CleanShutdown.IsZero() {
		t.Fatalf("meta = %+v", st.Meta)
	}
	if len(st.Consumers) != 1 || len(st.Shapes) != 9 || len(st.Tombstones) != 1 {
		t.Fatalf("state: %d consumers, %d shapes, %d tombstones", len(st.Consumers), len(st.Shapes), len(st.Tombstones))
	}
	acked := 0
	for _, sh := range st.Shapes {
		if sh.FlushedLSN == 100 {
			acked++
		}
	}
	if acked != 5 {
		t.Fatalf("%d shapes with a durable ack, want 5", acked)
	}
	if st.Meta.LastFlush != 100 {
		t.Fatalf("recorded flush %s, want 0/64", st.Meta.LastFlush)
	}
	if !contains(kinds(st.Events), ledger.EventEvicted) || !contains(kinds(st.Events), ledger.EventRegistered) {
		t.Fatalf("journal = %v", kinds(st.Events))
	}
}

func TestLoadWhileDaemonHoldsTheFile(t *testing.T) {
	l, _, path := newLedger(t)
	mustRegister(t, l, "c", 0)
	_, err := ledger.Load(path)
	if !errors.Is(err, ledger.ErrLocked) || !strings.Contains(err.Error(), "inspect -url") {
		t.Fatalf("load of a locked file: %v, want ErrLocked suggesting inspect -url", err)
	}
	cfg := testConfig(path, newClock())
	if _, err := ledger.Open(cfg); !errors.Is(err, ledger.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	// The daemon's own snapshot serves inspect -url.
	snap := filepath.Join(t.TempDir(), "snap.db")
	f, _ := os.Create(snap)
	if _, err := l.WriteSnapshot(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	st, err := ledger.Load(snap)
	if err != nil || len(st.Consumers) != 1 {
		t.Fatalf("load of a snapshot: %v %+v", err, st)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.db")
	if _, err := ledger.Load(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("load of a missing file: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Load created the file")
	}
}

func TestVerifyFindsBrokenInvariants(t *testing.T) {
	path := closedLedger(t, 4)
	st, err := ledger.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	evicted := st.Tombstones[0]
	editBolt(t, path, func(tx *bolt.Tx) error {
		// A shape of an unknown consumer, and the evicted shape live again at
		// its evicted generation: what I3 and I4 forbid.
		if err := tx.Bucket([]byte("consumers")).Delete([]byte("c")); err != nil {
			return err
		}
		id := []byte(st.Shapes[0].ID)
		v := unseal(t, id, tx.Bucket([]byte("shapes")).Get(id))
		return tx.Bucket([]byte("shapes")).Put([]byte(evicted.Shape), seal([]byte(evicted.Shape), v))
	})
	probs, err := ledger.Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	var checks []string
	for _, p := range probs {
		checks = append(checks, p.Check)
	}
	if !contains(checks, "shape_owner") || !contains(checks, "resurrected") {
		t.Fatalf("verify found %v, want shape_owner and resurrected", probs)
	}
}

func TestTombstoneCompactionKeepsGenerations(t *testing.T) {
	l, clk, _ := newLedger(t)
	reg := mustRegister(t, l, "c", time.Hour)
	mustShapes(t, l, "c", "s")
	if _, err := l.Evict("s", ledger.ReasonManual, "", "test"); err != nil {
		t.Fatal(err)
	}
	sh, created, err := l.PutShape(ledger.ShapeSpec{ID: "s", Consumer: "c", Table: "public.t"})
	if err != nil || !created || sh.Generation != 2 {
		t.Fatalf("recreate: %+v %v %v, want generation 2", sh, created, err)
	}
	if _, err := l.Evict("s", ledger.ReasonManual, "", "test"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(8 * 24 * time.Hour)
	if err := l.ExpireConsumer("c", ledger.ReasonLeaseExpired, "no heartbeat for 8 days"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Heartbeat("c", reg.Lease, nil); !isGone(err) {
		t.Fatalf("heartbeat after expiry: %v, want gone", err)
	}
	if err := l.RecordTick(clk.Now()); err != nil {
		t.Fatal(err)
	}
	if _, ok := l.Tombstone("s"); ok || len(l.Tombstones()) != 0 {
		t.Fatal("tombstones past retention not compacted")
	}
	c := mustRegister(t, l, "c", time.Hour)
	if c.Epoch != 2 {
		t.Fatalf("epoch %d, want 2", c.Epoch)
	}
	sh, _, err = l.PutShape(ledger.ShapeSpec{ID: "s", Consumer: "c", Table: "public.t"})
	if err != nil || sh.Generation != 3 {
		t.Fatalf("after compaction: %+v %v, want generation 3 (I4)", sh, err)
	}
}

func TestJournalBounded(t *testing.T) {
	clk := newClock()
	cfg := testConfig(filepath.Join(t.TempDir(), "ledger.db"), clk)
	cfg.JournalMaxEvents = 10
	l := openAt(t, cfg)
	mustRegister(t, l, "c", time.Hour)
	for i := 0; i < 30; i++ {
		if err := l.Record(ledger.Event{Kind: ledger.EventChallenged, Shape: "s" + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Each group commit trims the journal; so does the reconcile tick.
	if n := len(l.Events(0, 0)); n != 10 {
		t.Fatalf("%d events after the commit, want the bound, 10", n)
	}
	if err := l.RecordTick(clk.Now()); err != nil {
		t.Fatal(err)
	}
	evs := l.Events(0, 0)
	if len(evs) != 10 || evs[9].Kind != ledger.EventChallenged {
		t.Fatalf("journal after trim: %d events %v", len(evs), kinds(evs))
	}
	if got := l.Events(evs[7].Seq, 0); len(got) != 2 || got[0].Seq != evs[8].Seq {
		t.Fatalf("events since %d: %v", evs[7].Seq, got)
	}
}
