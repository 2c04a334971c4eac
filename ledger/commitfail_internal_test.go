package ledger

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
)

// syncBuffer is a log sink the committer goroutine and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestCommitFailureBacksOff: while every group commit fails (a full disk),
// the committer retries with capped exponential backoff instead of a tight
// loop, CommitHealth reports the failure, the log says so at a bounded rate,
// and the first commit that succeeds again clears it with a "recovered" line.
// An ack made meanwhile is not durable (Sync fails) and the flush position
// does not move until it is (I6). Fake time (synctest): attempts are counted
// over a simulated minute, no wall-clock threshold.
func TestCommitFailureBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &syncBuffer{}
		path := filepath.Join(t.TempDir(), "ledger.db")
		l, err := Open(Config{Path: path, Logger: zerolog.New(logs),
			Identity: Identity{SystemID: "7301234567890123456", Timeline: 1, Database: "app", Slot: "ledgerd"}})
		if err != nil {
			t.Fatal(err)
		}
		var attempts atomic.Int64
		var failing atomic.Bool
		if _, err := l.Register(ConsumerSpec{ID: "c", TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := l.PutShape(ShapeSpec{ID: "s", Consumer: "c", Table: "public.t"}); err != nil {
			t.Fatal(err)
		}
		failing.Store(true)
		l.mu.Lock()
		l.fault = func() error {
			if !failing.Load() {
				return nil
			}
			// A committer that retries in a tight loop would never let
			// fake time move; slowing it down here lets the test end and
			// count it.
			if attempts.Add(1) > 500 {
				time.Sleep(time.Second)
			}
			return syscall.ENOSPC
		}
		l.mu.Unlock()
		defer func() {
			failing.Store(false)
			_ = l.Close()
		}()

		l.Track(100, 110, []string{"s"})
		before := l.FlushLSN()
		if err := l.Ack("s", 100); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(context.Background()); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Sync while commits fail: %v, want the commit's error", err)
		}

		time.Sleep(time.Minute)
		synctest.Wait()
		n := attempts.Load()
		t.Logf("%d commit attempts in a minute of failures", n)
		// Retries at 0.1, 0.2, 0.4, ... s, then every commitRetryMax (5 s):
		// about 17 attempts in a minute.
		if n < 10 || n > 25 {
			t.Errorf("%d commit attempts in a minute of failures, want 10..25 (capped exponential backoff)", n)
		}
		h := l.CommitHealth()
		if !h.Failing || !errors.Is(h.Err, syscall.ENOSPC) || h.Failures < uint64(n)-1 || h.Since.IsZero() {
			t.Errorf("CommitHealth while failing = %+v", h)
		}
		if got := l.FlushLSN(); got != before {
			t.Errorf("flush LSN moved to %s while commits fail, want %s (I6)", got, before)
		}
		text := logs.String()
		if c := strings.Count(text, "group commit failed"); c != 1 {
			t.Errorf("first failure logged %d times, want 1:\n%s", c, text)
		}
		if c := strings.Count(text, "group commit still failing"); c < 1 || c > 2 {
			t.Errorf("still-failing logged %d times in a minute, want 1 or 2 (every 30 s):\n%s", c, text)
		}
		if t.Failed() {
			return
		}

		failing.Store(false)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if h := l.CommitHealth(); h.Failing {
			t.Errorf("CommitHealth after the disk has room again = %+v, want not failing", h)
		}
		if err := l.Sync(context.Background()); err != nil {
			t.Fatalf("Sync after recovery: %v", err)
		}
		if got := l.FlushLSN(); got <= before {
			l.FlushLSN() // the idle path records the safe LSN with the next commit
			time.Sleep(time.Second)
			synctest.Wait()
		}
		if got := l.FlushLSN(); got != 110 {
			t.Errorf("flush LSN after recovery = %s, want 0/6E", got)
		}
		if c := strings.Count(logs.String(), "group commit recovered"); c != 1 {
			t.Errorf("recovered logged %d times, want 1:\n%s", c, logs.String())
		}
		if st := l.Stats(); st.CommitErrors < uint64(n) {
			t.Errorf("Stats.CommitErrors = %d, want at least %d", st.CommitErrors, n)
		}
	})
}

// TestCloseWhileCommitsFail: Close returns while every commit fails (SIGTERM
// on a full disk must not hang), with the commit's error, and the file is
// left as the last successful commit made it.
func TestCloseWhileCommitsFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ledger.db")
		cfg := Config{Path: path, Logger: zerolog.Nop(),
			Identity: Identity{SystemID: "7301234567890123456", Timeline: 1, Database: "app", Slot: "ledgerd"}}
		l, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Register(ConsumerSpec{ID: "c", TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := l.PutShape(ShapeSpec{ID: "s", Consumer: "c", Table: "public.t"}); err != nil {
			t.Fatal(err)
		}
		l.Track(100, 110, []string{"s"})
		var attempts atomic.Int64
		l.mu.Lock()
		l.fault = func() error {
			if attempts.Add(1) > 500 {
				time.Sleep(time.Second)
			}
			return syscall.ENOSPC
		}
		l.mu.Unlock()
		if err := l.Ack("s", 100); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		closed := make(chan error, 1)
		go func() { closed <- l.Close() }()
		time.Sleep(time.Minute)
		synctest.Wait()
		select {
		case err := <-closed:
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("Close while commits fail: %v, want the commit's error", err)
			}
		default:
			l.mu.Lock()
			l.fault = nil
			l.mu.Unlock()
			<-closed
			t.Fatal("Close did not return while commits were failing")
		}
		probs, err := Verify(path)
		if err != nil || len(probs) > 0 {
			t.Fatalf("verify after a close on a full disk: %v %v", probs, err)
		}
		st, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Shapes) != 1 || st.Shapes[0].FlushedLSN != 0 {
			t.Errorf("shapes after a close on a full disk: %+v, want s flushed at its start 0/0 (the ack was never durable)", st.Shapes)
		}
	})
}
