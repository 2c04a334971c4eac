package stream

import (
	"net"
	"sync/atomic"
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
//
// A stream that is behind (catching up on a backlog) over TCP also waits
// before each read that follows a short one, whatever the gaps: on a
// loaded machine the walsender, short of CPU, sends a few transactions at
// a time with gaps longer than coalesceGap, and a TCP socket holds
// megabytes, so the walsender goes on sending meanwhile without waking
// anyone (the socket is read outside the runtime's poller, see blockConn).
// Over a Unix socket a stream that is behind waits only as a live one
// does, before dense short reads, and not as long (unixCoalesceDelay):
// that socket holds a hundred single-row transactions, about 0.6ms of a
// walsender's output at full speed (its send buffer counts each small
// packet at several times its size), so a longer wait, with the time
// taken to handle what was read before it, fills the socket and the
// walsender waits too, for room. How far behind the stream
// is comes from the server (see backlogLag), so a live stream is never
// delayed this way.
const (
	coalesceDelay = 600 * time.Microsecond
	// unixCoalesceDelay is coalesceDelay over a Unix socket. Side by side
	// over the Unix socket (BenchmarkEndToEnd), 150-300µs beat 600µs by a
	// few percent, and the walsender waited for room a third less often.
	unixCoalesceDelay = 250 * time.Microsecond
	// coalesceGap: a short read that follows the previous one by less than
	// this is dense traffic.
	coalesceGap = 200 * time.Microsecond
	// coalesceAfter dense short reads in a row start the delaying.
	coalesceAfter = 16
	// readBufferBytes is what one read from the connection may take in.
	// pgx's own reader asks for at most 8 KiB, a few dozen single-row
	// transactions, and often far less (the room left at the end of its
	// buffer): reading through a larger buffer takes in everything that
	// arrived during a delay with one system call.
	readBufferBytes = 64 << 10
	// backlogLag: a transaction the walsender sends more than this after
	// its commit (both times from the server's clock) is part of a
	// backlog.
	backlogLag = time.Second
)

type coalescingConn struct {
	net.Conn
	buf  []byte // read from the connection, not yet returned: buf[r:w]
	r, w int
	// idle, when set, runs before each read from the connection, once
	// everything read before was returned: the stream has handed over all
	// it could decode and is about to wait (Batcher.EndBatch).
	idle  func()
	last  time.Time // when the previous read returned
	dense int       // consecutive short reads at a short gap
	short bool      // the previous read was short
	unix  bool      // a Unix socket: a backlog's sparse reads are not delayed (set by the dialer)
	// backlog: the stream is catching up (set by the session, see
	// backlogLag).
	backlog atomic.Bool
	// now is time.Now and sleep the wait before a read, replaced in
	// tests: the connection's own pause when it has one (blockConn),
	// time.Sleep otherwise.
	now   func() time.Time
	sleep func(time.Duration)
}

func newCoalescingConn(c net.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c, buf: make([]byte, readBufferBytes), now: time.Now, sleep: time.Sleep}
	if p, ok := c.(interface{ pause(time.Duration) }); ok {
		cc.sleep = p.pause
	}
	return cc
}

func (c *coalescingConn) Read(p []byte) (int, error) {
	if c.r < c.w {
		n := copy(p, c.buf[c.r:c.w])
		c.r += n
		return n, nil
	}
	if c.idle != nil {
		c.idle()
	}
	behind := c.backlog.Load()
	if p, ok := c.Conn.(interface{ setPolled(bool) }); ok {
		p.setPolled(!behind)
	}
	delay := coalesceDelay
	if c.unix {
		delay = unixCoalesceDelay
	}
	if c.dense >= coalesceAfter || c.short && behind && !c.unix {
		c.sleep(delay)
	}
	n, err := c.Conn.Read(c.buf)
	now := c.now()
	c.short = n < len(c.buf)/2
	switch {
	case !c.short:
		c.dense = 0 // reads are already large
	case now.Sub(c.last) < coalesceGap || c.dense >= coalesceAfter && now.Sub(c.last) < coalesceGap+delay:
		c.dense++
	default:
		c.dense = 0
	}
	c.last = now
	// A net.Conn returns data or an error, not both; should it return
	// both with more data than p holds, the data comes first and the next
	// read of the connection tells the error again (a deadline is judged
	// anew).
	c.r, c.w = 0, n
	m := copy(p, c.buf[:n])
	c.r = m
	if m < n {
		return m, nil
	}
	return m, err
}
