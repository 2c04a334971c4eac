package ledger_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// The scenarios Electric's FlushTracker is tested on, restated for commit
// LSNs. Each transaction is (commit LSN, end LSN = commit + 8).

func track(t *testing.T, l *ledger.Ledger, commit ledger.LSN, shapes ...string) []string {
	t.Helper()
	return l.Track(commit, commit+8, shapes)
}

func syncFlush(t *testing.T, l *ledger.Ledger) ledger.LSN {
	t.Helper()
	if err := l.Sync(context.Background()); err != nil {
		t.Fatalf("sync: %v", err)
	}
	return l.FlushLSN()
}

func TestScenarioAdvancesAtOnceWithoutShapes(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a")
	if got := track(t, l, 100); len(got) != 0 {
		t.Fatalf("track without shapes returned %v", got)
	}
	wantSafe(t, l, 108)
	if got := syncFlush(t, l); got != 108 {
		t.Fatalf("flush = %s, want 0/6C", got)
	}
}

func TestScenarioHoldsWhileAnyShapeUnflushed(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a", "b")
	if got := track(t, l, 100, "a", "b"); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("track returned %v", got)
	}
	wantSafe(t, l, 100)
	mustAck(t, l, "a", 100)
	wantSafe(t, l, 100)
	if got := syncFlush(t, l); got != 100 {
		t.Fatalf("flush = %s, want 0/64 (b still pending)", got)
	}
	mustAck(t, l, "b", 100)
	wantSafe(t, l, 108)
	if got := syncFlush(t, l); got != 108 {
		t.Fatalf("flush = %s, want 0/6C", got)
	}
}

func TestScenarioPartialFlushAdvancesToNextPending(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a")
	track(t, l, 100, "a")
	track(t, l, 200, "a")
	track(t, l, 300, "a")
	mustAck(t, l, "a", 100)
	wantSafe(t, l, 200)
	mustAck(t, l, "a", 250) // between two commits: completes 200 only
	wantSafe(t, l, 300)
	if sh, _ := l.Shape("a"); sh.FlushedLSN != 250 || sh.PendingLSN != 300 {
		t.Fatalf("shape a: flushed %s pending %s, want 0/FA and 0/12C", sh.FlushedLSN, sh.PendingLSN)
	}
	mustAck(t, l, "a", 300)
	wantSafe(t, l, 308)
}

func TestScenarioSeveralShapesAtSamePosition(t *testing.T) {
	l, clk, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a", "b", "x")
	at := clk.Now()
	track(t, l, 100, "a", "b", "x")
	clk.Advance(time.Second)
	hs := l.Holders(0)
	if len(hs) != 3 || hs[0].ID != "a" || hs[2].ID != "x" {
		t.Fatalf("holders = %v, want a, b, x", hs)
	}
	for _, h := range hs {
		if h.PendingLSN != 100 || !h.PendingSince.Equal(at) {
			t.Fatalf("holder %s pending %s since %s, want 0/64 since %s", h.ID, h.PendingLSN, h.PendingSince, at)
		}
	}
	mustAck(t, l, "a", 100)
	mustAck(t, l, "x", 100)
	wantSafe(t, l, 100)
	if hs := l.Holders(1); len(hs) != 1 || hs[0].ID != "b" {
		t.Fatalf("holders(1) = %v, want b", hs)
	}
	mustAck(t, l, "b", 100)
	wantSafe(t, l, 108)
	if hs := l.Holders(0); len(hs) != 0 {
		t.Fatalf("holders after all acked = %v", hs)
	}
}

func TestScenarioNoShapeTransactionsInterleaved(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a")
	track(t, l, 100, "a")
	track(t, l, 200)
	track(t, l, 300)
	wantSafe(t, l, 100)
	track(t, l, 400, "a")
	track(t, l, 500)
	mustAck(t, l, "a", 100)
	wantSafe(t, l, 400)
	mustAck(t, l, "a", 400)
	wantSafe(t, l, 508)
	if got := syncFlush(t, l); got != 508 {
		t.Fatalf("flush = %s, want 0/1FC", got)
	}
}

func TestScenarioContinuousUpdates(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a", "b")
	var flush ledger.LSN
	for i := ledger.LSN(1); i <= 200; i++ {
		track(t, l, i*100, "a", "b")
		if i > 1 {
			mustAck(t, l, "a", (i-1)*100)
			mustAck(t, l, "b", (i-1)*100)
		}
		wantSafe(t, l, i*100)
		if i%50 == 0 {
			f := syncFlush(t, l)
			if f < flush || f != i*100 {
				t.Fatalf("flush = %s after %s, want %s", f, flush, i*100)
			}
			flush = f
		}
	}
}

func TestScenarioRemovingOnlyUnflushedShapeUnblocks(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a", "b")
	track(t, l, 100, "a", "b")
	mustAck(t, l, "b", 100)
	wantSafe(t, l, 100)
	ts, err := l.Evict("a", ledger.ReasonStalled, "no ack for 60s", "test")
	if err != nil {
		t.Fatal(err)
	}
	if ts.Generation != 1 || ts.Reason != ledger.ReasonStalled || ts.Consumer != "c" {
		t.Fatalf("tombstone = %+v", ts)
	}
	wantSafe(t, l, 108)
	if got := syncFlush(t, l); got != 108 {
		t.Fatalf("flush = %s, want 0/6C", got)
	}
	err = l.Ack("a", 100)
	var g *ledger.GoneError
	if !errors.As(err, &g) || g.Reason != ledger.ReasonStalled || !errors.Is(err, ledger.ErrGone) {
		t.Fatalf("ack after eviction: %v, want *GoneError stalled", err)
	}
	if got := track(t, l, 200, "a", "b"); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("track after eviction returned %v, want [b]", got)
	}
}

func TestScenarioSeveralDeadShapesEvictEarliest(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a", "b", "x", "live")
	track(t, l, 100, "a", "live")
	track(t, l, 200, "b", "live")
	track(t, l, 300, "x", "live")
	mustAck(t, l, "live", 300)
	wantSafe(t, l, 100)
	for _, step := range []struct {
		id   string
		want ledger.LSN
	}{{"a", 200}, {"b", 300}, {"x", 308}} {
		if _, err := l.Evict(step.id, ledger.ReasonLeaseExpired, "", "test"); err != nil {
			t.Fatal(err)
		}
		wantSafe(t, l, step.want)
	}
}

func TestScenarioAckAtOrAboveLastSentCompletes(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a", "b")
	track(t, l, 100, "a", "b")
	track(t, l, 200, "a")
	track(t, l, 300, "b")
	// a's last sent is 200: an ack of 200 completes both entries at once,
	// never one exact match at a time.
	mustAck(t, l, "a", 200)
	// b gets an ack above its first entry and equal to its last: completes.
	mustAck(t, l, "b", 300)
	wantSafe(t, l, 308)
	if sh, _ := l.Shape("a"); sh.PendingLSN != 0 || sh.FlushedLSN != 200 || sh.LastSent != 200 {
		t.Fatalf("shape a = %+v", sh)
	}
}

func TestAckBeyondLastSentIsError(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a")
	track(t, l, 100, "a")
	err := l.Ack("a", 101)
	var ae *ledger.AckError
	if !errors.As(err, &ae) || !errors.Is(err, ledger.ErrAckBeyondSent) || ae.LastSent != 100 || ae.LSN != 101 {
		t.Fatalf("ack beyond last sent: %v, want *AckError", err)
	}
	wantSafe(t, l, 100) // the bad ack changed nothing
}

func TestLowerAckIgnored(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a")
	track(t, l, 100, "a")
	track(t, l, 200, "a")
	mustAck(t, l, "a", 200)
	mustAck(t, l, "a", 100) // lower: accepted and ignored (I6)
	if sh, _ := l.Shape("a"); sh.FlushedLSN != 200 {
		t.Fatalf("flushed went back to %s", sh.FlushedLSN)
	}
	if err := l.Ack("nope", 1); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("ack unknown shape: %v, want ErrNotFound", err)
	}
}

func TestTrackSkipsFlushedAndUnknownShapes(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a", "b")
	track(t, l, 100, "a", "b")
	mustAck(t, l, "a", 100)
	// A replay of the same transaction (Postgres restarted from an older
	// confirmed position) reaches only the shape that has not acked it (I2),
	// and does not add a second pending entry.
	if got := track(t, l, 100, "a", "b", "unknown"); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("replayed track returned %v, want [b]", got)
	}
	mustAck(t, l, "b", 100)
	wantSafe(t, l, 108)
	// A shape created now starts at the processed position and does not get
	// older transactions.
	mustShapes(t, l, "c", "late")
	if sh, _ := l.Shape("late"); sh.StartLSN != 107 || sh.FlushedLSN != 107 {
		t.Fatalf("late shape = %+v, want start 0/6B", sh)
	}
	if got := track(t, l, 100, "late"); len(got) != 0 {
		t.Fatalf("old transaction routed to a newer shape: %v", got)
	}
}

// TestShapeGetsCommitAtProcessedPosition: the processed position is the end
// LSN of the last transaction, and the next one's commit record may begin
// exactly there (adjacent commits). A shape created in between must receive
// it (I1): its flushed LSN must not already cover it.
func TestShapeGetsCommitAtProcessedPosition(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a")
	track(t, l, 100, "a") // ends at 108
	mustShapes(t, l, "c", "late")
	if got := track(t, l, 108, "late"); !slices.Equal(got, []string{"late"}) {
		t.Fatalf("transaction committed at the processed position reached %v, want [late]", got)
	}
	mustAck(t, l, "a", 100)
	if safe := l.SafeLSN(); safe > 108 {
		t.Fatalf("safe LSN %s passed the new shape's pending 0/6C", safe)
	}
	// The idle WAL end (and, after a restart, the persisted position) plays
	// the same part.
	l.Idle(200)
	mustShapes(t, l, "c", "later")
	if got := track(t, l, 200, "later"); !slices.Equal(got, []string{"later"}) {
		t.Fatalf("transaction committed at the idle WAL end reached %v, want [later]", got)
	}
}

func TestIdleAdvancesToWALEnd(t *testing.T) {
	l, _, _ := newLedger(t)
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "a")
	track(t, l, 100, "a")
	l.Idle(5000)
	wantSafe(t, l, 100) // pending still holds
	mustAck(t, l, "a", 100)
	wantSafe(t, l, 5000)
	// Without an explicit Sync, FlushLSN asks for the idle position to be
	// recorded and reports it once committed; it never reports unrecorded
	// state.
	first := l.FlushLSN()
	if first > 5000 {
		t.Fatalf("flush %s beyond safe", first)
	}
	if got := syncFlush(t, l); got != 5000 {
		t.Fatalf("flush = %s, want 0/1388", got)
	}
}

// TestNewShapeStartsAtSlotConfirmedFlush: on a new file, before the stream
// has handed over anything, a shape starts at the slot's confirmed position
// (Config.SlotConfirmedFlush), not at 0/0: a replay of older transactions
// (Postgres moving its confirmed position back after a crash) does not
// reach it, the next transaction does (I1, I2). After a restart the file's
// own processed position counts when it is further.
func TestNewShapeStartsAtSlotConfirmedFlush(t *testing.T) {
	clk := newClock()
	cfg := testConfig(filepath.Join(t.TempDir(), "ledger.db"), clk)
	cfg.SlotConfirmedFlush = 0x5000
	l := openAt(t, cfg)
	mustRegister(t, l, "c", time.Hour)
	mustShapes(t, l, "c", "s")
	if sh, _ := l.Shape("s"); sh.StartLSN != 0x4fff || sh.FlushedLSN != 0x4fff {
		t.Fatalf("shape on a new file = start %s flushed %s, want 0/4FFF below the slot's confirmed 0/5000", sh.StartLSN, sh.FlushedLSN)
	}
	if got := track(t, l, 0x4000, "s"); len(got) != 0 {
		t.Fatalf("a transaction before the slot's position reached the new shape: %v", got)
	}
	if got := track(t, l, 0x5000, "s"); !slices.Equal(got, []string{"s"}) {
		t.Fatalf("the transaction at the slot's position reached %v, want [s]", got)
	}
	mustAck(t, l, "s", 0x5000)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.SlotConfirmedFlush = 0x100
	l = openAt(t, cfg)
	mustShapes(t, l, "c", "t")
	if sh, _ := l.Shape("t"); sh.StartLSN < 0x5000 {
		t.Fatalf("shape after a restart starts at %s, below the processed position the file records", sh.StartLSN)
	}
}
