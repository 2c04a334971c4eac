package ledger_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/internal/clocktest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// fakeClock is a controlled clock: time moves only when a test says so.
type fakeClock = clocktest.Clock

func newClock() *fakeClock {
	return clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

var testIdentity = ledger.Identity{SystemID: "7301234567890123456", Timeline: 1, Database: "app", Slot: "ledgerd"}

func testConfig(path string, clk ledger.Clock) ledger.Config {
	return ledger.Config{Path: path, Identity: testIdentity, Clock: clk, Logger: zerolog.Nop()}
}

// checkBolt runs bbolt's consistency check on a closed ledger file.
func checkBolt(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Errorf("opening %s for the consistency check: %v", path, err)
		return
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() {
			t.Errorf("bbolt check %s: %v", path, cerr)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// openAt opens a ledger at path and registers cleanups: close it (if the test
// has not) and then run bbolt's consistency check and Verify on the file.
func openAt(t testing.TB, cfg ledger.Config) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.Path, err)
	}
	t.Cleanup(func() {
		checkBolt(t, cfg.Path)
		probs, err := ledger.Verify(cfg.Path)
		if err != nil {
			t.Errorf("verify %s: %v", cfg.Path, err)
		}
		for _, p := range probs {
			t.Errorf("verify %s: %s", cfg.Path, p)
		}
	})
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return l
}

// newLedger opens a fresh ledger in a temporary directory with a fake clock.
func newLedger(t testing.TB) (*ledger.Ledger, *fakeClock, string) {
	t.Helper()
	clk := newClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	return openAt(t, testConfig(path, clk)), clk, path
}

// mustRegister registers a consumer or fails the test.
func mustRegister(t testing.TB, l *ledger.Ledger, id string, ttl time.Duration) ledger.Consumer {
	t.Helper()
	c, err := l.Register(ledger.ConsumerSpec{ID: id, TTL: ttl})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	return c
}

// mustShapes creates shapes owned by consumer on table "public.t".
func mustShapes(t testing.TB, l *ledger.Ledger, consumer string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, _, err := l.PutShape(ledger.ShapeSpec{ID: id, Consumer: consumer, Table: "public.t"}); err != nil {
			t.Fatalf("put shape %s: %v", id, err)
		}
	}
}

func mustAck(t testing.TB, l *ledger.Ledger, shape string, lsn ledger.LSN) {
	t.Helper()
	if err := l.Ack(shape, lsn); err != nil {
		t.Fatalf("ack %s %s: %v", shape, lsn, err)
	}
}

func wantSafe(t testing.TB, l *ledger.Ledger, want ledger.LSN) {
	t.Helper()
	if got := l.SafeLSN(); got != want {
		t.Fatalf("safe LSN = %s (%d), want %s (%d)", got, uint64(got), want, uint64(want))
	}
}

func isGone(err error) bool {
	var g *ledger.GoneError
	return errors.As(err, &g) && errors.Is(err, ledger.ErrGone)
}
