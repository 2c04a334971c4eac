//go:build linux

package stream

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// blockPair returns a blockConn and the other end of its Unix socket.
func blockPair(t *testing.T) (*blockConn, net.Conn) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	b, ok := newBlockConn(c).(*blockConn)
	if !ok {
		t.Fatalf("newBlockConn(%T) kept the connection in the poller", c)
	}
	t.Cleanup(func() { b.Close() })
	return b, peer
}

// modes runs f with the socket out of the poller (a backlog) and in it
// (live).
func modes(t *testing.T, f func(t *testing.T, polled bool)) {
	for _, polled := range []bool{false, true} {
		name := "backlog"
		if polled {
			name = "live"
		}
		t.Run(name, func(t *testing.T) { f(t, polled) })
	}
}

func TestBlockConnReadsAndWrites(t *testing.T) { modes(t, testBlockConnReadsAndWrites) }

func testBlockConnReadsAndWrites(t *testing.T, polled bool) {
	b, peer := blockPair(t)
	b.setPolled(polled)
	go func() { _, _ = peer.Write([]byte("from the server")) }()
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(b, buf, len("from the server"))
	if err != nil || string(buf[:n]) != "from the server" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	big := make([]byte, 4<<20) // more than the socket holds: the write waits for room
	for i := range big {
		big[i] = byte(i)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.Write(big)
		done <- err
	}()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != big[i] {
			t.Fatalf("byte %d differs", i)
		}
	}
	peer.Close()
	if _, err := b.Read(buf); err != io.EOF {
		t.Errorf("read after the peer closed: %v, want io.EOF", err)
	}
}

// TestBlockConnDeadlines: a read deadline in the past, and one moved to
// now while a read waits (Stream.Nudge, a cancelled context), end the read
// with a timeout, as the net package's do (pgconn wraps it as its own); a later deadline lets reads
// wait again.
func TestBlockConnDeadlines(t *testing.T) { modes(t, testBlockConnDeadlines) }

func testBlockConnDeadlines(t *testing.T, polled bool) {
	b, peer := blockPair(t)
	b.setPolled(polled)
	buf := make([]byte, 64)
	_ = b.SetReadDeadline(time.Unix(1, 0))
	if _, err := b.Read(buf); !isTimeout(err) {
		t.Fatalf("read past its deadline: %v, want a timeout", err)
	}

	// With data waiting too, as the net package's reads.
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Read(buf); !isTimeout(err) {
		t.Fatalf("read past its deadline with data waiting: %v, want a timeout", err)
	}
	_ = b.SetReadDeadline(time.Time{})
	if n, err := b.Read(buf); err != nil || string(buf[:n]) != "x" {
		t.Fatalf("read without a deadline: %q, %v", buf[:n], err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := b.Read(buf)
		done <- err
	}()
	waitBlocked(t, done)
	_ = b.SetReadDeadline(time.Now())
	if err := <-done; !isTimeout(err) {
		t.Fatalf("read cut short by a deadline: %v, want a timeout", err)
	}

	_ = b.SetReadDeadline(time.Now().Add(time.Hour))
	go func() {
		_, err := b.Read(buf)
		done <- err
	}()
	waitBlocked(t, done)
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("read with an hour left: %v", err)
	}
}

func TestBlockConnCloseEndsAWaitingRead(t *testing.T) { modes(t, testBlockConnCloseEndsAWaitingRead) }

func testBlockConnCloseEndsAWaitingRead(t *testing.T, polled bool) {
	b, _ := blockPair(t)
	b.setPolled(polled)
	done := make(chan error, 1)
	go func() {
		_, err := b.Read(make([]byte, 64))
		done <- err
	}()
	waitBlocked(t, done)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read ended by Close: %v, want net.ErrClosed", err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v, want net.ErrClosed", err)
	}
}

// waitBlocked gives a read that should wait the time to start waiting,
// and fails if it returned instead.
func waitBlocked(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("read returned %v, want it to wait", err)
	case <-time.After(20 * time.Millisecond):
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestBlockConnSwitchesModes: the stream moving between live and backlog
// reads every byte once, in order, whichever way it reads.
func TestBlockConnSwitchesModes(t *testing.T) {
	b, peer := blockPair(t)
	go func() {
		for i := range 100 {
			_, _ = peer.Write([]byte{byte(i)})
		}
	}()
	buf := make([]byte, 1)
	for i := range 100 {
		b.setPolled(i%3 != 0)
		if _, err := io.ReadFull(b, buf); err != nil || buf[0] != byte(i) {
			t.Fatalf("byte %d: %v, %v", i, buf[0], err)
		}
	}
}

// TestCoalescingWaitIsCutShortByClose: the wait before a read of the
// replication socket is the connection's own (a ppoll timed in
// nanoseconds, not time.Sleep, which waits a millisecond or more for any
// shorter wait), and closing the connection ends it.
func TestCoalescingWaitIsCutShortByClose(t *testing.T) {
	b, _ := blockPair(t)
	cc := newCoalescingConn(b)
	done := make(chan struct{})
	go func() {
		cc.sleep(time.Hour)
		close(done)
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
}
