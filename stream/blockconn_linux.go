//go:build linux

package stream

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/ledgerd/ledgerd/internal/rawsock"
)

// blockConn reads and writes the replication socket outside the Go
// runtime's poller while the stream catches up on a backlog. A socket in the poller is in its epoll set for good:
// while any of the process's threads waits in epoll (an idle one always
// does, for timers and the API's connections), every packet the walsender
// sends wakes that thread, whether or not the stream is reading, also
// while it waits before a read to let a backlog pile up (coalescingConn).
// The walsender sends each pgoutput message as it goes, three for a
// single-row transaction: each of those wake-ups costs the walsender (the
// wake-up is made in its send) and ledgerd, on the cores they share
// (BenchmarkEndToEnd's Unix-socket case). Here the stream waits for data
// with ppoll on the socket and an eventfd, only when it has read all
// there was, so the walsender wakes it only then, as it would
// pg_recvlogical. The eventfd cuts a wait short when a deadline moves
// (Stream.Nudge, a cancelled context) or the connection closes.
//
// A live stream waits for each transaction, a thousand times a second
// under live traffic: waiting in a system call then costs more (the
// scheduler takes the goroutine's P back, and its monitor thread polls
// while a call blocks) than the few packets the walsender sends meanwhile.
// While live (setPolled) the socket is read through a twin in the poller,
// with internal/rawsock's raw reads.
type blockConn struct {
	fd, wake int // the socket (a duplicate, non-blocking) and an eventfd
	local    net.Addr
	remote   net.Addr

	rdl, wdl atomic.Int64 // deadlines in Unix nanoseconds; 0: none
	closed   atomic.Bool
	ops      sync.RWMutex // reads and writes (shared) against Close
	rmu, wmu sync.Mutex   // one read and one write at a time

	tmu  sync.Mutex // twin and its deadlines
	twin net.Conn   // the socket in the runtime's poller, while live
}

// newBlockConn takes c's socket out of the runtime's poller: the
// returned connection owns a duplicate of it and c is closed. It returns c
// unchanged when c does not expose its socket.
func newBlockConn(c net.Conn) net.Conn {
	rc, ok := rawsock.RawConn(c)
	if !ok {
		return c
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			derr = errno
			return
		}
		fd = int(r)
	}); err != nil || derr != nil {
		return c
	}
	wake, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		syscall.Close(fd)
		return c
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		syscall.Close(int(wake))
		return c
	}
	b := &blockConn{fd: fd, wake: int(wake), local: c.LocalAddr(), remote: c.RemoteAddr()}
	// Closing c takes its descriptor out of the poller; the socket stays
	// open through the duplicate.
	_ = c.Close()
	return b
}

// setPolled reads the socket through a twin in the runtime's poller (on)
// or outside it (off). Only the reader calls it, between reads. Should the
// twin fail to open, the socket is read outside the poller.
func (b *blockConn) setPolled(on bool) {
	b.tmu.Lock()
	defer b.tmu.Unlock()
	if on == (b.twin != nil) || b.closed.Load() {
		return
	}
	if !on {
		_ = b.twin.Close() // out of the poller; the socket stays open through fd
		b.twin = nil
		return
	}
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(b.fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return
	}
	f := os.NewFile(r, "replication")
	c, err := net.FileConn(f) // a duplicate of its own, in the poller
	f.Close()
	if err != nil {
		return
	}
	if d := b.rdl.Load(); d != 0 {
		_ = c.SetReadDeadline(time.Unix(0, d))
	}
	b.twin = rawsock.Wrap(c)
}

func (b *blockConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b.rmu.Lock()
	defer b.rmu.Unlock()
	b.ops.RLock()
	defer b.ops.RUnlock()
	b.tmu.Lock()
	twin := b.twin
	b.tmu.Unlock()
	if twin != nil {
		n, err := twin.Read(p)
		if err != nil && b.closed.Load() {
			err = b.opError("read", net.ErrClosed)
		}
		return n, err
	}
	for {
		if b.closed.Load() {
			return 0, b.opError("read", net.ErrClosed)
		}
		if passed(&b.rdl) {
			return 0, b.opError("read", os.ErrDeadlineExceeded)
		}
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(b.fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch errno {
		case 0:
			if n == 0 {
				return 0, io.EOF
			}
			return int(n), nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
		default:
			return 0, b.opError("read", os.NewSyscallError("read", errno))
		}
		if err := b.wait(pollIn, &b.rdl); err != nil {
			return 0, b.opError("read", err)
		}
	}
}

func (b *blockConn) Write(p []byte) (int, error) {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.ops.RLock()
	defer b.ops.RUnlock()
	n := 0
	for n < len(p) {
		if b.closed.Load() {
			return n, b.opError("write", net.ErrClosed)
		}
		if passed(&b.wdl) {
			return n, b.opError("write", os.ErrDeadlineExceeded)
		}
		m, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(b.fd), uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
		switch errno {
		case 0:
			n += int(m)
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
		default:
			return n, b.opError("write", os.NewSyscallError("write", errno))
		}
		if err := b.wait(pollOut, &b.wdl); err != nil {
			return n, b.opError("write", err)
		}
	}
	return n, nil
}

// passed reports whether the deadline in dl has passed: then reads or
// writes fail even when they would not block, as the net package's do.
func passed(dl *atomic.Int64) bool {
	d := dl.Load()
	return d != 0 && time.Now().UnixNano() >= d
}

// wait blocks until the socket is ready for events, the deadline in dl
// passes (os.ErrDeadlineExceeded), or the eventfd is signalled (nil: the
// caller tries again and looks at the deadline and Close anew).
func (b *blockConn) wait(events int16, dl *atomic.Int64) error {
	var ts *syscall.Timespec
	if d := dl.Load(); d != 0 {
		left := d - time.Now().UnixNano()
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := syscall.NsecToTimespec(left)
		ts = &t
	}
	fds := [2]pollFd{{fd: int32(b.fd), events: events}, {fd: int32(b.wake), events: pollIn}}
	// A blocking call through the scheduler (Syscall, not RawSyscall): the
	// goroutine's P goes to other work meanwhile.
	_, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 2, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if errno != 0 && errno != syscall.EINTR {
		return os.NewSyscallError("ppoll", errno)
	}
	if fds[1].revents != 0 {
		var buf [8]byte
		syscall.Read(b.wake, buf[:])
	}
	return nil
}

type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

// signal cuts a wait short.
func (b *blockConn) signal() {
	one := [8]byte{1}
	syscall.Write(b.wake, one[:])
}

func (b *blockConn) Close() error {
	if b.closed.Swap(true) {
		return b.opError("close", net.ErrClosed)
	}
	b.signal()
	b.tmu.Lock()
	if b.twin != nil {
		_ = b.twin.Close() // ends a read waiting on it
		b.twin = nil
	}
	b.tmu.Unlock()
	b.ops.Lock() // no read or write uses the descriptors any more
	defer b.ops.Unlock()
	err := syscall.Close(b.fd)
	syscall.Close(b.wake)
	if err != nil {
		return b.opError("close", os.NewSyscallError("close", err))
	}
	return nil
}

func (b *blockConn) LocalAddr() net.Addr  { return b.local }
func (b *blockConn) RemoteAddr() net.Addr { return b.remote }

func (b *blockConn) SetDeadline(t time.Time) error {
	b.setDeadline(&b.wdl, t)
	return b.SetReadDeadline(t)
}

func (b *blockConn) SetReadDeadline(t time.Time) error {
	b.setDeadline(&b.rdl, t)
	b.signal()
	b.tmu.Lock()
	defer b.tmu.Unlock()
	if b.twin != nil {
		return b.twin.SetReadDeadline(t)
	}
	return nil
}

func (b *blockConn) SetWriteDeadline(t time.Time) error {
	b.setDeadline(&b.wdl, t)
	b.signal()
	return nil
}

func (b *blockConn) setDeadline(dl *atomic.Int64, t time.Time) {
	if t.IsZero() {
		dl.Store(0)
		return
	}
	n := t.UnixNano()
	if n == 0 {
		n = 1
	}
	dl.Store(n)
}

// opError reports err as the net package does: a deadline is
// os.ErrDeadlineExceeded (a net.Error whose Timeout is true), a closed
// connection net.ErrClosed.
func (b *blockConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: b.local.Network(), Source: b.local, Addr: b.remote, Err: err}
}

// Poll events (poll.h).
const (
	pollIn  = 0x1
	pollOut = 0x4
)

// pause waits d before a read (coalescingConn), or less when the eventfd
// is signalled (a moved deadline, Close). It waits in ppoll, whose timeout
// counts nanoseconds: time.Sleep waits in the runtime's poller, whose epoll
// timeout counts whole milliseconds, so its 600µs waits took a millisecond
// or more, and over a Unix socket the walsender, out of room meanwhile,
// waited the difference.
func (b *blockConn) pause(d time.Duration) {
	b.ops.RLock()
	defer b.ops.RUnlock()
	if b.closed.Load() {
		return
	}
	ts := syscall.NsecToTimespec(int64(d))
	fds := [1]pollFd{{fd: int32(b.wake), events: pollIn}}
	// A blocking call through the scheduler, as in wait.
	_, _, _ = syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	if fds[0].revents != 0 {
		var buf [8]byte
		_, _ = syscall.Read(b.wake, buf[:])
	}
}
