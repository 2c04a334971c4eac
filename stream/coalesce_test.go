package stream

import (
	"net"
	"testing"
	"time"
)

// shortReads is a connection whose reads return a few bytes at once.
type shortReads struct{ net.Conn }

func (shortReads) Read(p []byte) (int, error) { return copy(p, "0123456789"), nil }

// fullReads is a connection whose reads fill the buffer.
type fullReads struct{ net.Conn }

func (fullReads) Read(p []byte) (int, error) { return len(p), nil }

func testConn(c net.Conn, f *fakeTime) *coalescingConn {
	cc := newCoalescingConn(c)
	cc.now, cc.sleep = f.now, f.sleep
	return cc
}

// fakeTime advances by step on every reading of the clock and records sleeps.
type fakeTime struct {
	t      time.Time
	step   time.Duration
	sleeps int
	waited time.Duration // the last sleep
}

func (f *fakeTime) now() time.Time { f.t = f.t.Add(f.step); return f.t }
func (f *fakeTime) sleep(d time.Duration) {
	f.sleeps++
	f.waited = d
	f.t = f.t.Add(d)
}

func reads(c *coalescingConn, n int) {
	buf := make([]byte, 8192)
	for range n {
		_, _ = c.Read(buf)
	}
}

func TestCoalescingDelaysOnlyDenseTraffic(t *testing.T) {
	dense := &fakeTime{t: time.Unix(0, 0), step: 10 * time.Microsecond}
	c := testConn(shortReads{}, dense)
	reads(c, 1+coalesceAfter) // the first read has no predecessor
	if dense.sleeps != 0 {
		t.Fatalf("slept %d times before %d dense reads", dense.sleeps, coalesceAfter)
	}
	reads(c, 100)
	if dense.sleeps != 100 || dense.waited != coalesceDelay {
		t.Errorf("dense traffic: slept before %d of 100 reads, %v the last time; want all, %v", dense.sleeps, dense.waited, coalesceDelay)
	}

	sparse := &fakeTime{t: time.Unix(0, 0), step: time.Millisecond}
	c = testConn(shortReads{}, sparse)
	reads(c, 1000)
	if sparse.sleeps != 0 {
		t.Errorf("sparse traffic delayed %d reads", sparse.sleeps)
	}

	// Full reads never need delaying.
	full := &fakeTime{t: time.Unix(0, 0), step: 10 * time.Microsecond}
	c = testConn(fullReads{}, full)
	for range 100 {
		_, _ = c.Read(make([]byte, readBufferBytes))
	}
	if full.sleeps != 0 {
		t.Errorf("full reads delayed %d times", full.sleeps)
	}
}

// countedReads is a connection whose reads return the next 1000 bytes of a
// counting sequence, and that counts them.
type countedReads struct {
	net.Conn
	reads int
	next  byte
}

func (c *countedReads) Read(p []byte) (int, error) {
	c.reads++
	n := min(len(p), 1000)
	for i := range n {
		p[i] = c.next
		c.next++
	}
	return n, nil
}

// TestReadsTheConnectionOncePerBuffer: small reads are served from one read
// of the connection, and idle runs only before the connection is read
// again, once all that was read has been returned.
func TestReadsTheConnectionOncePerBuffer(t *testing.T) {
	conn := &countedReads{}
	c := testConn(conn, &fakeTime{t: time.Unix(0, 0), step: time.Millisecond})
	idles := 0
	c.idle = func() { idles++ }
	var want byte
	p := make([]byte, 10)
	for i := range 101 {
		n, err := c.Read(p)
		if err != nil || n != 10 {
			t.Fatalf("read %d: %d bytes, %v", i, n, err)
		}
		for _, b := range p {
			if b != want {
				t.Fatalf("read %d: byte %d, want %d", i, b, want)
			}
			want++
		}
		if wantReads := i/100 + 1; conn.reads != wantReads || idles != wantReads {
			t.Fatalf("after %d small reads: %d reads of the connection and %d idle calls, want %d", i+1, conn.reads, idles, wantReads)
		}
	}
}

// TestBacklogDelaysShortReads: over TCP, while the stream is behind, a
// read that follows a short one waits, however sparse the reads; a live
// stream (not behind) and full reads never wait.
func TestBacklogDelaysShortReads(t *testing.T) {
	behind := &fakeTime{t: time.Unix(0, 0), step: time.Millisecond}
	c := testConn(shortReads{}, behind)
	c.backlog.Store(true)
	reads(c, 101)
	if behind.sleeps != 100 {
		t.Errorf("behind: slept before %d of the 100 reads after a short one, want all", behind.sleeps)
	}

	live := &fakeTime{t: time.Unix(0, 0), step: time.Millisecond}
	c = testConn(shortReads{}, live)
	reads(c, 100)
	if live.sleeps != 0 {
		t.Errorf("live: delayed %d reads", live.sleeps)
	}

	full := &fakeTime{t: time.Unix(0, 0), step: time.Millisecond}
	c = testConn(fullReads{}, full)
	c.backlog.Store(true)
	for range 100 {
		_, _ = c.Read(make([]byte, readBufferBytes))
	}
	if full.sleeps != 0 {
		t.Errorf("behind, full reads: delayed %d reads", full.sleeps)
	}
}

// TestUnixBacklogWaitsOnlyWhenDense: over a Unix socket, while the
// stream is behind, a short read waits only as a live stream's does, when
// reads are dense: the walsender, whose socket holds a few dozen
// transactions, would wait for room meanwhile.
func TestUnixBacklogWaitsOnlyWhenDense(t *testing.T) {
	sparse := &fakeTime{t: time.Unix(0, 0), step: time.Millisecond}
	c := testConn(shortReads{}, sparse)
	c.unix = true
	c.backlog.Store(true)
	reads(c, 101)
	if sparse.sleeps != 0 {
		t.Errorf("behind, sparse short reads: waited before %d of 100 reads, want none", sparse.sleeps)
	}

	dense := &fakeTime{t: time.Unix(0, 0), step: 10 * time.Microsecond}
	c = testConn(shortReads{}, dense)
	c.unix = true
	c.backlog.Store(true)
	reads(c, 1+coalesceAfter+100)
	if dense.sleeps != 100 {
		t.Errorf("behind, dense short reads: waited before %d of the 100 reads after %d dense ones, want all", dense.sleeps, coalesceAfter)
	}
	// Not so long that the socket fills meanwhile (see unixCoalesceDelay).
	if dense.waited != unixCoalesceDelay {
		t.Errorf("behind, dense short reads: waited %v before a read, want %v", dense.waited, unixCoalesceDelay)
	}
}
