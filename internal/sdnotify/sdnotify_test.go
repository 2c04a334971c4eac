package sdnotify_test

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ledgerd/ledgerd/internal/sdnotify"
)

func TestNotifySendsOneDatagram(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n := sdnotify.New(func(k string) string {
		if k == "NOTIFY_SOCKET" {
			return path
		}
		return ""
	})
	if !n.Enabled() {
		t.Fatal("NOTIFY_SOCKET set but the notifier is off")
	}
	if err := n.Notify("READY=1\nSTATUS=streaming"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	k, err := conn.Read(buf)
	if err != nil || string(buf[:k]) != "READY=1\nSTATUS=streaming" {
		t.Fatalf("datagram %q %v", buf[:k], err)
	}
}

func TestNotifyWithoutSocketDoesNothing(t *testing.T) {
	n := sdnotify.New(func(string) string { return "" })
	if n.Enabled() || n.Notify("READY=1") != nil {
		t.Fatal("a notifier without NOTIFY_SOCKET must do nothing")
	}
}

func TestWatchdogInterval(t *testing.T) {
	env := map[string]string{"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "42"}
	get := func(k string) string { return env[k] }
	if d, ok := sdnotify.WatchdogInterval(get, 42); !ok || d != 3*time.Second {
		t.Errorf("for our pid: %v %v, want 3s", d, ok)
	}
	if _, ok := sdnotify.WatchdogInterval(get, 43); ok {
		t.Error("a watchdog asked of another pid must be ignored")
	}
	env["WATCHDOG_PID"] = ""
	if d, ok := sdnotify.WatchdogInterval(get, 43); !ok || d != 3*time.Second {
		t.Errorf("without WATCHDOG_PID: %v %v", d, ok)
	}
	env["WATCHDOG_USEC"] = "x"
	if _, ok := sdnotify.WatchdogInterval(get, 43); ok {
		t.Error("a malformed WATCHDOG_USEC must switch the watchdog off")
	}
}

// The watchdog pings at half the period while the loop is healthy, and not
// at all while it is not, so the service manager restarts a hung daemon.
func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var healthy atomic.Bool
		healthy.Store(true)
		var pings atomic.Int64
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			sdnotify.Watchdog(ctx, 10*time.Second, healthy.Load, func() { pings.Add(1) })
		}()
		synctest.Wait()
		if got := pings.Load(); got != 1 {
			t.Fatalf("pings at start: %d, want 1", got)
		}
		time.Sleep(20 * time.Second)
		synctest.Wait()
		if got := pings.Load(); got != 5 {
			t.Fatalf("pings after 20s at a 10s period: %d, want 5 (one every 5s)", got)
		}
		healthy.Store(false)
		time.Sleep(60 * time.Second)
		synctest.Wait()
		if got := pings.Load(); got != 5 {
			t.Fatalf("pings while unhealthy: %d more", got-5)
		}
		healthy.Store(true)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := pings.Load(); got != 6 {
			t.Fatalf("pings once healthy again: %d, want 6", got)
		}
		cancel()
		<-done
	})
}
