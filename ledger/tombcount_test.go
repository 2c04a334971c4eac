package ledger_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestTombstoneCountFollowsTombstones: the count status and metrics report
// without reading the tombstones stays what Tombstones returns through
// evictions (two generations of one id included), a restart and the
// compaction that deletes tombstones past their retention.
func TestTombstoneCountFollowsTombstones(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	cfg := testConfig(path, clk)
	cfg.TombstoneRetention = time.Hour
	l := openAt(t, cfg)
	check := func(l *ledger.Ledger, want int) {
		t.Helper()
		if n, all := l.TombstoneCount(), len(l.Tombstones()); n != want || all != want {
			t.Fatalf("TombstoneCount %d, Tombstones %d; want %d", n, all, want)
		}
	}
	mustRegister(t, l, "c", 48*time.Hour)
	evict := func(l *ledger.Ledger, id string) {
		t.Helper()
		if _, _, err := l.PutShape(ledger.ShapeSpec{ID: id, Consumer: "c", Table: "public.t"}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Evict(id, ledger.ReasonManual, "test", "test"); err != nil {
			t.Fatal(err)
		}
	}
	check(l, 0)
	for i := range 3 {
		evict(l, fmt.Sprintf("s%d", i))
	}
	evict(l, "s0") // a second generation: a second tombstone
	check(l, 4)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openAt(t, cfg)
	check(l, 4)
	clk.Advance(2 * time.Hour)
	evict(l, "young")
	for range 3 {
		if err := l.RecordTick(clk.Now()); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Minute)
	}
	check(l, 1)
}
