// Package cork lets an HTTP handler send what it writes in one system call.
//
// net/http writes a streamed answer through a 4 KiB buffer: a batch of
// change-stream frames larger than that leaves in three writes (the chunk
// header with the first 4 KiB, the rest, the chunk's closing CRLF), and
// over loopback TCP each is a segment the consumer is woken for. A Conn
// between net/http and the socket holds the writes of a corked stretch and
// passes them on with one write when it is uncorked, the way TCP_CORK
// holds segments but without its extra system calls. Writes over MaxHold
// bytes go through at once (after what was held): a large fragment is not
// copied.
//
// The listener wraps each connection (Listener), the server puts it in each
// request's context (ConnContext), and the handler finds it there
// (FromContext).
package cork

import (
	"context"
	"net"
	"sync"
)

// MaxHold is the most a corked Conn holds; a write that would take it past
// this goes through at once.
const MaxHold = 64 << 10

// Conn is a net.Conn whose writes may be held between Cork and Uncork.
type Conn struct {
	net.Conn
	mu     sync.Mutex // held writes against Uncork
	corked bool
	held   []byte
}

// Wrap returns c with corking.
func Wrap(c net.Conn) *Conn { return &Conn{Conn: c} }

// Cork holds the writes that follow until Uncork.
func (c *Conn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork writes what was held, in one write, and lets later writes through.
func (c *Conn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

func (c *Conn) flushLocked() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.held)
	c.held = c.held[:0]
	return err
}

func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	if len(c.held)+len(p) <= MaxHold {
		if c.held == nil {
			c.held = make([]byte, 0, MaxHold)
		}
		c.held = append(c.held, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// CloseWrite shuts down the writing side when the connection under c can
// (net/http does so before closing a connection it answered early).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Listener wraps each connection it accepts with Wrap.
type Listener struct{ net.Listener }

// Accept accepts a connection and wraps it.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

type connKey struct{}

// ConnContext is an http.Server's ConnContext: it puts a *Conn in the
// context of the requests it serves.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*Conn); ok {
		return context.WithValue(ctx, connKey{}, cc)
	}
	return ctx
}

// FromContext returns the request's *Conn, or nil when its server did not
// put one there.
func FromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}
