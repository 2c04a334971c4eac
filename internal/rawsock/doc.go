// Package rawsock makes a socket's reads and writes plain non-blocking
// system calls.
//
// Go's net package reads and writes through syscall.Read and
// syscall.Write, which tell the scheduler that the goroutine enters a
// system call that may block. When the process was idle, that bookkeeping
// wakes the runtime's monitor thread (sysmon) out of its sleep, and the
// monitor then polls every 20µs until the process is idle again. Sockets
// the netpoller manages are non-blocking: a read or write returns at once,
// with EAGAIN when it would block, and the goroutine then waits on the
// poller. A daemon that is woken a thousand times a second for one small
// message each time (live replication traffic, acks) pays more for that
// monitor than for the I/O itself.
//
// Wrap returns a net.Conn whose Read and Write make the system call
// without that bookkeeping (syscall.RawSyscall through the socket's
// syscall.RawConn) and wait on the poller as the net package does, with
// deadlines and Close working as before. Only Linux is covered; elsewhere
// Wrap returns the connection unchanged.
package rawsock

import (
	"net"
	"syscall"
)

// RawConn returns c's socket as a syscall.RawConn, or false when c does not
// expose it (a connection that is not a socket, or a wrapper).
func RawConn(c net.Conn) (syscall.RawConn, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	return rc, true
}
