package ledger_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestGoneConsumersPurgedAfterRetention: a consumer record outlives its
// consumer by the retention, then the periodic compaction deletes it, from
// memory and from the file, in bounded batches; a live consumer and one gone
// more recently stay.
func TestGoneConsumersPurgedAfterRetention(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	cfg := testConfig(path, clk)
	cfg.ConsumerRetention = 24 * time.Hour
	l := openAt(t, cfg)

	const old = 1500 // more than one purge batch
	for i := range old {
		c := mustRegister(t, l, fmt.Sprintf("old%04d", i), time.Minute)
		if err := l.Release(c.ID, c.Lease); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(23 * time.Hour)
	recent := mustRegister(t, l, "recent", time.Minute)
	if err := l.Release(recent.ID, recent.Lease); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, l, "alive", 48*time.Hour)
	if err := l.RecordTick(clk.Now()); err != nil {
		t.Fatal(err)
	}
	if n := len(l.Consumers()); n != old+2 {
		t.Fatalf("%d consumers before the retention ran out, want %d", n, old+2)
	}

	// Past the retention of the old ones: each compaction (once a minute)
	// purges a bounded batch until none is left.
	clk.Advance(2 * time.Hour)
	for range 5 {
		if err := l.RecordTick(clk.Now()); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Minute)
	}
	var ids []string
	for _, c := range l.Consumers() {
		ids = append(ids, c.ID)
	}
	if fmt.Sprint(ids) != "[alive recent]" {
		t.Fatalf("after the retention the ledger keeps %d consumers (%v ...), want [alive recent]", len(ids), ids[:min(3, len(ids))])
	}
	if _, ok := l.Consumer("old0000"); ok {
		t.Error("old0000 still known after its retention")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := ledger.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Consumers) != 2 {
		t.Errorf("the file keeps %d consumer records, want 2", len(st.Consumers))
	}
}
