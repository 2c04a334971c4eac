//go:build linux

package rawsock

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Wrap returns c with raw non-blocking reads and writes, or c itself when it
// does not expose its file descriptor (syscall.Conn).
func Wrap(c net.Conn) net.Conn {
	rc, ok := RawConn(c)
	if !ok {
		return c
	}
	r := &conn{Conn: c, rc: rc}
	r.readFn = r.read
	r.writeFn = r.write
	return r
}

// conn keeps the state of the current read and of the current write in
// fields, so that the functions handed to the RawConn are made once, not
// allocated for every call. rmu and wmu serialise reads and writes as the
// net package's own locks do.
type conn struct {
	net.Conn
	rc syscall.RawConn

	rmu    sync.Mutex
	rbuf   []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.readFn)
	n, rerr := c.rn, c.rerr
	c.rbuf, c.rerr = nil, nil
	if err != nil {
		return n, c.opError("read", err)
	}
	return n, rerr
}

// read is one read attempt: false asks the poller to wait for data.
func (c *conn) read(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch errno {
		case 0:
			c.rn = int(n)
			if n == 0 {
				c.rerr = io.EOF
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = c.opError("read", os.NewSyscallError("read", errno))
			return true
		}
	}
}

func (c *conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.writeFn)
	n, werr := c.wn, c.werr
	c.wbuf, c.werr = nil, nil
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, werr
}

// write writes as much of wbuf as the socket takes: false asks the poller
// to wait for room.
func (c *conn) write(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&c.wbuf[c.wn])), uintptr(len(c.wbuf)-c.wn))
		switch errno {
		case 0:
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = c.opError("write", os.NewSyscallError("write", errno))
			return true
		}
	}
	return true
}

// opError reports err as the net package does for op: a deadline is
// os.ErrDeadlineExceeded (a net.Error whose Timeout is true), a closed
// connection net.ErrClosed.
func (c *conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
