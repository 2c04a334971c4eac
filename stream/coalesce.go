package stream

import (
	"net"
	"time"
)

// Read coalescing. While the stream catches up on a backlog, the walsender
// sends one small packet per pgoutput message; reading each as it arrives
// costs a wake-up of the Go scheduler per message, and on a small machine
// that CPU is taken from the walsender itself, which is the bottleneck. When
// short reads follow each other closely (dense traffic), the next read waits
// coalesceDelay first so that many messages are read at once. Sparse
// traffic (a live, mostly idle stream) is read immediately: the delay only
// ever applies to a stream that is already busy, and adds at most
// coalesceDelay of latency to it.
const (
	coalesceDelay = 600 * time.Microsecond
	// coalesceGap: a short read that follows the previous one by less than
	// this is dense traffic.
	coalesceGap = 200 * time.Microsecond
	// coalesceAfter dense short reads in a row start the delaying.
	coalesceAfter = 16
)

type coalescingConn struct {
	net.Conn
	last  time.Time // when the previous read returned
	dense int       // consecutive short reads at a short gap
	// now and sleep are time.Now and time.Sleep, replaced in tests.
	now   func() time.Time
	sleep func(time.Duration)
}

func newCoalescingConn(c net.Conn) *coalescingConn {
	return &coalescingConn{Conn: c, now: time.Now, sleep: time.Sleep}
}

func (c *coalescingConn) Read(p []byte) (int, error) {
	if c.dense >= coalesceAfter {
		c.sleep(coalesceDelay)
	}
	n, err := c.Conn.Read(p)
	now := c.now()
	switch {
	case n >= len(p)/2:
		c.dense = 0 // reads are already large
	case now.Sub(c.last) < coalesceGap || c.dense >= coalesceAfter && now.Sub(c.last) < coalesceGap+coalesceDelay:
		c.dense++
	default:
		c.dense = 0
	}
	c.last = now
	return n, err
}
