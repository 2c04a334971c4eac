//go:build linux

package main_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// setFileSizeLimit sets RLIMIT_FSIZE of a running process: writes past limit
// bytes fail with EFBIG, as on a full file system (the Go runtime ignores
// SIGXFSZ). The file's first page stays writable; bbolt writes every data
// page after the two meta pages, so each commit fails before its meta page
// and the file stays as the last successful commit left it.
func setFileSizeLimit(t *testing.T, pid int, limit uint64) {
	t.Helper()
	lim := syscall.Rlimit{Cur: limit, Max: ^uint64(0)}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), syscall.RLIMIT_FSIZE,
		uintptr(unsafe.Pointer(&lim)), 0, 0, 0); e != 0 {
		t.Fatalf("prlimit RLIMIT_FSIZE on pid %d: %v", pid, e)
	}
}

// TestDiskFullEndToEnd: with the ledger file unable to grow, the ack gets a
// 500 and the slot does not pass the unacked transaction (I1, I6); group
// commits are retried with backoff (a few attempts, one error line, not
// hundreds a second); /readyz answers 503 naming the failing commits; the
// metrics show it; SIGTERM still ends the daemon (no second signal needed)
// and the file verifies clean. Started again with room, it acks and the slot
// moves.
func TestDiskFullEndToEnd(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY)")
	d := startDaemon(t, dsn, slot, "")
	ctx := context.Background()
	k := registerShape(t, d, "c", time.Minute, "s", "public.t", nil)
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sql(t, dsn, "INSERT INTO t VALUES (1)")
	var txn *client.Txn
	for txn == nil {
		if _, txn, err = s.Next(); err != nil {
			t.Fatal(err)
		}
	}

	setFileSizeLimit(t, d.cmd.Process.Pid, 4096)
	_, err = k.Ack(ctx, map[string]ledger.LSN{"s": txn.LSN})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 500 {
		t.Fatalf("ack on a full disk: %v, want a 500", err)
	}
	var ready *client.Error
	waitFor(t, "/readyz to report the failing commits", 30*time.Second, func() bool {
		_, err := d.c.Do(ctx, "GET", "/readyz", "", nil, nil)
		return errors.As(err, &ready) && ready.Status == 503 && strings.Contains(ready.Message, "group commits")
	})
	t.Logf("readyz: %s", ready.Message)
	time.Sleep(3 * time.Second) // the reconciler's ticks keep trying to commit
	m := scrape(t, d)
	if m["ledgerd_commits_failing"] != 1 {
		t.Errorf("ledgerd_commits_failing = %v, want 1", m["ledgerd_commits_failing"])
	}
	// Backoff: 0.1, 0.2, 0.4, 0.8, 1.6 s ... (a tight loop made hundreds a
	// second).
	if n := m["ledgerd_commit_failures_total"]; n < 2 || n > 30 {
		t.Errorf("ledgerd_commit_failures_total = %v after about 3 s of failures, want a few (backoff)", n)
	}
	logs := d.logText()
	if n := strings.Count(logs, "group commit failed"); n != 1 {
		t.Errorf("the first failure was logged %d times, want 1", n)
	}
	if cf := confirmedFlush(t, dsn, slot); cf >= txn.EndLSN {
		t.Errorf("confirmed_flush_lsn %s passed the transaction whose ack failed (end %s)", cf, txn.EndLSN)
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		d.done <- err
		if st := d.cmd.ProcessState; !st.Exited() {
			t.Fatalf("ledgerd did not exit by itself after SIGTERM: %v", st)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ledgerd did not exit within 30s of SIGTERM while commits were failing")
	}
	if !strings.Contains(d.logText(), "closing the ledger") {
		t.Errorf("the exit does not say the last changes were not written")
	}
	problems, err := ledger.Verify(d.dbPath)
	if err != nil || len(problems) > 0 {
		t.Fatalf("verify after SIGTERM on a full disk: %v %v", problems, err)
	}
	st, err := ledger.Load(d.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Shapes) != 1 || st.Shapes[0].FlushedLSN >= txn.LSN {
		t.Fatalf("shapes after the failed ack: %+v, want s not flushed to %s", st.Shapes, txn.LSN)
	}

	// With room again, the transaction is delivered again (its ack was
	// never durable: I1) and its ack moves the slot.
	startDaemonOn(t, d.addr, dsn, slot, d.dbPath)
	s.Close()
	if s, err = k.OpenStream(ctx); err != nil {
		t.Fatal(err)
	}
	var again *client.Txn
	for again == nil {
		if _, again, err = s.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if again.LSN != txn.LSN {
		t.Fatalf("after the restart the stream sent %s, want the unacked %s again", again.LSN, txn.LSN)
	}
	if _, err := k.Ack(ctx, map[string]ledger.LSN{"s": txn.LSN}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slot to move past the acked row", 30*time.Second, func() bool { return confirmedFlush(t, dsn, slot) >= txn.EndLSN })
}
