//go:build !linux

package stream

import "net"

// newBlockConn returns c: outside Linux the replication socket stays in
// the runtime's poller.
func newBlockConn(c net.Conn) net.Conn { return c }
