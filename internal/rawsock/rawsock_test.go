package rawsock_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/internal/rawsock"
)

// pair returns two connected sockets of the network ("tcp" or "unix"),
// both wrapped.
func pair(t *testing.T, network string) (a, b net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	c, err := net.Dial(network, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	a, b = rawsock.Wrap(c), rawsock.Wrap(s)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func networks(t *testing.T, f func(t *testing.T, network string)) {
	for _, n := range []string{"tcp", "unix"} {
		t.Run(n, func(t *testing.T) { f(t, n) })
	}
}

// TestLargeWriteArrivesWhole: a write larger than the socket buffers is
// written in pieces, waiting for room, and arrives whole and in order.
func TestLargeWriteArrivesWhole(t *testing.T) {
	networks(t, func(t *testing.T, network string) {
		a, b := pair(t, network)
		want := make([]byte, 8<<20)
		for i := range want {
			want[i] = byte(i * 7)
		}
		done := make(chan error, 1)
		go func() {
			n, err := a.Write(want)
			if err == nil && n != len(want) {
				err = io.ErrShortWrite
			}
			done <- err
			a.Close()
		}()
		got, err := io.ReadAll(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes, not the %d written", len(got), len(want))
		}
	})
}

// TestEOF: a read after the peer closed is io.EOF, as from the net package.
func TestEOF(t *testing.T) {
	networks(t, func(t *testing.T, network string) {
		a, b := pair(t, network)
		if _, err := a.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		a.Close()
		buf := make([]byte, 8)
		if n, err := b.Read(buf); n != 1 || err != nil {
			t.Fatalf("first read: %d, %v; want 1, nil", n, err)
		}
		if n, err := b.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("read after close: %d, %v; want 0, io.EOF", n, err)
		}
	})
}

// TestDeadlines: a read or write past its deadline fails as a timeout
// (os.ErrDeadlineExceeded, net.Error.Timeout), which callers such as
// pgconn and net/http rely on.
func TestDeadlines(t *testing.T) {
	networks(t, func(t *testing.T, network string) {
		a, b := pair(t, network)
		if err := b.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		_, err := b.Read(make([]byte, 8))
		checkTimeout(t, "read", err)

		// Nobody reads b: a large write fills the buffers and stops at
		// its deadline, reporting what it wrote.
		if err := a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		big := make([]byte, 64<<20)
		n, err := a.Write(big)
		checkTimeout(t, "write", err)
		if n >= len(big) {
			t.Fatalf("wrote %d of %d bytes past the deadline", n, len(big))
		}
	})
}

func checkTimeout(t *testing.T, op string, err error) {
	t.Helper()
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s past the deadline: %v, want a timeout", op, err)
	}
}

// TestCloseEndsBlockedRead: Close makes a read waiting for data return
// net.ErrClosed.
func TestCloseEndsBlockedRead(t *testing.T) {
	networks(t, func(t *testing.T, network string) {
		_, b := pair(t, network)
		errc := make(chan error, 1)
		go func() {
			_, err := b.Read(make([]byte, 8))
			errc <- err
		}()
		b.Close()
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
		}
	})
}

// TestWriteToClosedPeer: writing to a peer that is gone fails rather than
// killing the process (SIGPIPE) or hanging.
func TestWriteToClosedPeer(t *testing.T) {
	a, b := pair(t, "unix")
	b.Close()
	var err error
	for range 100 {
		if _, err = a.Write(make([]byte, 64<<10)); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("writes to a closed peer kept succeeding")
	}
}

// TestWrapWithoutDescriptor: a connection without a file descriptor is
// returned as it is.
func TestWrapWithoutDescriptor(t *testing.T) {
	c, d := net.Pipe()
	defer c.Close()
	defer d.Close()
	if got := rawsock.Wrap(c); got != c {
		t.Fatalf("Wrap(net.Pipe()) = %T, want the pipe itself", got)
	}
}
