package reconcile_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/reconcile"
)

// TestRunLogsErrorsRateLimitedAndRecovers: Run passes every interval; while
// passes fail it logs at most once per ErrorLogInterval, and the first pass
// that succeeds again logs "reconcile recovered". Fake time (synctest).
func TestRunLogsErrorsRateLimitedAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ledger.db")
		l, err := ledger.Open(ledger.Config{Path: path, Logger: zerolog.Nop(),
			Identity: ledger.Identity{SystemID: "7301234567890123456", Timeline: 1, Database: "app", Slot: "ledgerd"}})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		sl := &slot{err: errors.New("connection refused")}
		var logs bytes.Buffer
		r, err := reconcile.New(reconcile.Config{Ledger: l, Slot: sl, Process: &procs{alive: map[int]string{}}, Host: host,
			Interval: time.Second, ErrorLogInterval: time.Minute, Logger: zerolog.New(&logs)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := l.Register(ledger.ConsumerSpec{ID: "c", TTL: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := l.PutShape(ledger.ShapeSpec{ID: "s", Consumer: c.ID, Table: "public.t"}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()

		time.Sleep(90 * time.Second) // passes at 0s, 1s, ... 90s, all failing
		synctest.Wait()
		// The lease probe ran although the audit failed.
		if ts, ok := l.Tombstone("s"); !ok || ts.Reason != ledger.ReasonLeaseExpired {
			t.Errorf("shape s: tombstone %+v, %v; want lease_expired while the slot audit fails", ts, ok)
		}
		sl.set(func(*reconcile.SlotState) {})
		sl.mu.Lock()
		sl.err = nil
		sl.mu.Unlock()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		text := logs.String()
		if n := strings.Count(text, "reconcile pass failed"); n != 2 {
			t.Errorf("failure logged %d times in 90 s of failing passes, want 2 (at 0 s and 60 s):\n%s", n, text)
		}
		if n := strings.Count(text, "reconcile recovered"); n != 1 {
			t.Errorf("recovered logged %d times, want 1:\n%s", n, text)
		}
		if !strings.Contains(text, `"failed_passes":91`) {
			t.Errorf("recovered line does not count the 91 failed passes:\n%s", text)
		}
	})
}

// TestProcFS: the /proc prober reads the start time after the command name
// (which may hold spaces and parentheses), and tells a running process, a
// missing one, a zombie and a reused pid apart.
func TestProcFS(t *testing.T) {
	root := t.TempDir()
	stat := func(pid, line string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, "stat"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fields := " 1 1 1 0 -1 4194560 100 0 0 0 5 2 0 0 20 0 1 0 %s 1000 10 18446744073709551615\n"
	stat("10", "10 (my (odd) worker) S"+strings.Replace(fields, "%s", "12345", 1))
	stat("11", "11 (zomb) Z"+strings.Replace(fields, "%s", "999", 1))
	stat("12", "12 (short) S 1 2 3\n")
	p := reconcile.ProcFS{Root: root}
	if got, err := p.StartTime(10); err != nil || got != "12345" {
		t.Fatalf("start time = %q, %v; want 12345", got, err)
	}
	for _, pid := range []int{11, 13} { // a zombie, no process
		if _, err := p.StartTime(pid); !errors.Is(err, reconcile.ErrNoProcess) {
			t.Errorf("pid %d: %v, want ErrNoProcess", pid, err)
		}
	}
	if _, err := p.StartTime(12); err == nil || errors.Is(err, reconcile.ErrNoProcess) {
		t.Errorf("a truncated stat line: %v, want an error that is not ErrNoProcess (nothing may be decided on it)", err)
	}
	// This process, through the real /proc: same start time every time.
	self := reconcile.ProcFS{}
	a, err := self.StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if b, err := self.StartTime(os.Getpid()); err != nil || a != b {
		t.Errorf("start time of this process changed: %q then %q, %v", a, b, err)
	}
}

// TestNewValidates: a missing ledger or a fraction above 1 is refused with an
// error naming the fix.
func TestNewValidates(t *testing.T) {
	if _, err := reconcile.New(reconcile.Config{}); !errors.Is(err, reconcile.ErrNoLedger) {
		t.Errorf("no ledger: %v, want ErrNoLedger", err)
	}
	e := newEnv(t, nil)
	if _, err := reconcile.New(reconcile.Config{Ledger: e.l, EvictMaxFraction: 1.5}); err == nil || !strings.Contains(err.Error(), "between 0 and 1") {
		t.Errorf("fraction 1.5: %v", err)
	}
	if _, err := reconcile.New(reconcile.Config{Ledger: e.l, MaxShapeLagBytes: -1}); err == nil {
		t.Error("negative WAL budget accepted")
	}
}

// LastPass tells when the last pass ended, failed passes included: the
// daemon's watchdog pings only while it stays recent. Fake time (synctest).
func TestLastPassFollowsRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ledger.db")
		l, err := ledger.Open(ledger.Config{Path: path, Logger: zerolog.Nop(),
			Identity: ledger.Identity{SystemID: "7301234567890123456", Timeline: 1, Database: "app", Slot: "ledgerd"}})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		r, err := reconcile.New(reconcile.Config{Ledger: l, Slot: &slot{err: errors.New("connection refused")},
			Process: &procs{alive: map[int]string{}}, Host: host, Interval: time.Second, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		if !r.LastPass().IsZero() {
			t.Fatalf("LastPass before any pass: %v", r.LastPass())
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		if age := time.Since(r.LastPass()); age < 0 || age > time.Millisecond {
			t.Errorf("LastPass is %v old while Run passes every second", age)
		}
		cancel()
		<-done
		time.Sleep(time.Minute)
		if age := time.Since(r.LastPass()); age < time.Minute {
			t.Errorf("LastPass is %v old a minute after Run ended", age)
		}
	})
}
