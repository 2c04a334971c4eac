// Package sdnotify speaks the service manager's notification protocol
// (sd_notify): a unix datagram of "KEY=VALUE" lines sent to the socket named
// by NOTIFY_SOCKET. ledgerd says READY=1 once it streams, STOPPING=1 when it
// drains, STATUS= what it waits for, and WATCHDOG=1 while its reconcile loop
// runs, so that systemd (Type=notify, WatchdogSec=) starts what depends on
// it only once it is ready and restarts it if its loop hangs. It is a few
// lines of the protocol rather than a dependency.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Notifier sends notifications to the socket of NOTIFY_SOCKET. A Notifier
// made without one does nothing, so callers need not check.
type Notifier struct {
	addr *net.UnixAddr // nil: notifications are off
}

// New returns the Notifier of the environment: NOTIFY_SOCKET names a path,
// or an abstract socket when it starts with '@'.
func New(getenv func(string) string) *Notifier {
	name := getenv("NOTIFY_SOCKET")
	if name == "" {
		return &Notifier{}
	}
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n.addr != nil }

// Notify sends state, one or more "KEY=VALUE" lines, in one datagram.
func (n *Notifier) Notify(state string) error {
	if n.addr == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("connecting to NOTIFY_SOCKET %s: %w", n.addr.Name, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("writing to NOTIFY_SOCKET %s: %w", n.addr.Name, err)
	}
	return nil
}

// WatchdogInterval returns the watchdog period the service manager asks
// for (WATCHDOG_USEC), if it asks this process (WATCHDOG_PID, when set,
// is pid). Pings are due at half of it.
func WatchdogInterval(getenv func(string) string, pid int) (time.Duration, bool) {
	usec, err := strconv.ParseInt(getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0, false
	}
	if p := getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(pid) {
		return 0, false
	}
	return time.Duration(usec) * time.Microsecond, true
}

// Watchdog calls ping every period/2 while healthy reports true, until ctx
// is done. A loop that stops being healthy stops the pings, and the service
// manager restarts the process once period has passed without one.
func Watchdog(ctx context.Context, period time.Duration, healthy func() bool, ping func()) {
	t := time.NewTicker(period / 2)
	defer t.Stop()
	for {
		if healthy() {
			ping()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
