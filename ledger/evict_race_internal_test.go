package ledger

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// withCommitRace runs answer in another goroutine while an eviction's bbolt
// transaction is about to start: the answer either completes at once or
// waits for the commit. It returns the answer's error once the eviction is
// over.
func withCommitRace(t *testing.T, evict func() error, answer func() error) (answerErr, evictErr error) {
	t.Helper()
	done := make(chan error, 1)
	parked := make(chan struct{}, 1)
	testHookParked = func() {
		select {
		case parked <- struct{}{}:
		default:
		}
	}
	testHookCommit = func() {
		testHookCommit = nil
		go func() { done <- answer() }()
		select {
		case err := <-done:
			done <- err
		case <-parked:
		}
	}
	t.Cleanup(func() { testHookCommit, testHookParked = nil, nil })
	evictErr = evict()
	select {
	case answerErr = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the answer racing the eviction never returned")
	}
	return answerErr, evictErr
}

func raceLedger(t *testing.T) *Ledger {
	t.Helper()
	l, err := Open(Config{Path: filepath.Join(t.TempDir(), "ledger.db"), Logger: zerolog.Nop(),
		Identity: Identity{SystemID: "7301234567890123456", Timeline: 1, Database: "app", Slot: "ledgerd"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// TestAckDuringEvictionCommit: an ack that arrives while a shape's eviction
// is being committed is either applied before it (and then the eviction
// sees it) or answered as gone, never accepted and then evicted (I4).
func TestAckDuringEvictionCommit(t *testing.T) {
	l := raceLedger(t)
	if _, err := l.Register(ConsumerSpec{ID: "c", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.PutShape(ShapeSpec{ID: "s", Consumer: "c", Table: "public.t"}); err != nil {
		t.Fatal(err)
	}
	l.Track(0x100, 0x110, []string{"s"})
	ackErr, err := withCommitRace(t,
		func() error { _, err := l.Evict("s", ReasonManual, "test", "operator"); return err },
		func() error { return l.Ack("s", 0x100) })
	if err != nil {
		t.Fatalf("evict: %v", err)
	}
	if _, live := l.Shape("s"); !live && !errors.Is(ackErr, ErrGone) {
		t.Fatalf("ack during the eviction's commit answered %v, and the shape was evicted: an accepted ack was lost", ackErr)
	}
}

// TestHeartbeatDuringConsumerEnd: a heartbeat that arrives while the end of
// its consumer is being committed is answered as gone, never renewed and
// then ended.
func TestHeartbeatDuringConsumerEnd(t *testing.T) {
	l := raceLedger(t)
	c, err := l.Register(ConsumerSpec{ID: "c", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.PutShape(ShapeSpec{ID: "s", Consumer: "c", Table: "public.t"}); err != nil {
		t.Fatal(err)
	}
	seen, _ := l.Consumer("c")
	hbErr, err := withCommitRace(t,
		func() error { return l.ExpireConsumerIf(seen, ReasonProcessGone, "test") },
		func() error { _, err := l.Heartbeat("c", c.Lease, []string{"s"}); return err })
	if err != nil {
		t.Fatalf("expire: %v", err)
	}
	if cur, _ := l.Consumer("c"); cur.Gone && !errors.Is(hbErr, ErrGone) {
		t.Fatalf("heartbeat during the consumer's end answered %v, and the consumer was ended: an accepted heartbeat was lost", hbErr)
	}
}

// TestSettledShapeDuringEvictionCommit: SettledShape asked while the shape's
// eviction is being committed answers with the outcome, not with the shape
// about to go (a defer recorded in that window learns it came too late).
func TestSettledShapeDuringEvictionCommit(t *testing.T) {
	l := raceLedger(t)
	if _, err := l.Register(ConsumerSpec{ID: "c", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.PutShape(ShapeSpec{ID: "s", Consumer: "c", Table: "public.t"}); err != nil {
		t.Fatal(err)
	}
	errLive := errors.New("reported live")
	lookErr, err := withCommitRace(t,
		func() error { _, err := l.Evict("s", ReasonStalled, "test", "reconciler"); return err },
		func() error {
			if _, ok := l.SettledShape("s"); ok {
				return errLive
			}
			return nil
		})
	if err != nil {
		t.Fatalf("evict: %v", err)
	}
	if lookErr != nil {
		t.Fatalf("SettledShape during the eviction's commit: %v, and the shape was evicted", lookErr)
	}
}

// TestHeartbeatDuringShapeEviction: a heartbeat (listing the shape) that
// arrives while one of its consumer's shapes is being evicted is answered
// once the eviction is over, so its answer can name the shape as evicted
// rather than leave the consumer believing it live.
func TestHeartbeatDuringShapeEviction(t *testing.T) {
	l := raceLedger(t)
	c, err := l.Register(ConsumerSpec{ID: "c", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.PutShape(ShapeSpec{ID: "s", Consumer: "c", Table: "public.t"}); err != nil {
		t.Fatal(err)
	}
	errNoTomb := errors.New("no tombstone when the heartbeat was answered")
	hbErr, err := withCommitRace(t,
		func() error { _, err := l.Evict("s", ReasonNotInInventory, "test", "reconciler"); return err },
		func() error {
			if _, err := l.Heartbeat("c", c.Lease, []string{"s"}); err != nil {
				return err
			}
			if _, ok := l.Tombstone("s"); !ok {
				return errNoTomb
			}
			return nil
		})
	if err != nil {
		t.Fatalf("evict: %v", err)
	}
	if hbErr != nil {
		t.Fatalf("heartbeat during the shape's eviction: %v", hbErr)
	}
}
