package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/internal/cork"
	"github.com/ledgerd/ledgerd/internal/rawsock"
)

// API server limits. Without them a connection that sends headers and
// withholds its body, or idles after an answer, stays open for ever, and a
// few hundred of them use up the descriptors that /healthz, the ledger and
// the replication connection's reconnect need.
const (
	// defaultReadHeaderTimeout bounds the wait for a request's headers.
	defaultReadHeaderTimeout = 10 * time.Second
	// defaultReadTimeout bounds reading a whole request, body included (at
	// most 1 MiB). It does not end a call that runs longer, such as a change
	// stream: net/http lifts the read deadline once the request is read.
	defaultReadTimeout = 30 * time.Second
	// defaultWriteTimeout bounds a call from its request to the end of its
	// answer. Change streams and the snapshot move their own write deadline
	// with every write instead (a stream writes a keepalive at least every
	// few seconds), so only a client that stops reading is cut.
	defaultWriteTimeout = 60 * time.Second
	// defaultIdleTimeout bounds a keep-alive connection between requests.
	defaultIdleTimeout = 2 * time.Minute
	// DefaultMaxConnections caps the API's open connections (-max-connections).
	// Each consumer holds about two: its change stream and its calls.
	DefaultMaxConnections = 1024
	// fdReserve is how many descriptors the cap leaves to everything else:
	// the ledger file, Postgres connections, snapshot files, logs.
	fdReserve = 64
)

// httpLimits bounds what clients can hold of the API server.
type httpLimits struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxConns          int // open connections; more wait in the listen backlog
}

func defaultHTTPLimits(maxConns int) httpLimits {
	return httpLimits{ReadHeaderTimeout: defaultReadHeaderTimeout, ReadTimeout: defaultReadTimeout,
		WriteTimeout: defaultWriteTimeout, IdleTimeout: defaultIdleTimeout, MaxConns: maxConns}
}

// newHTTPServer returns the API server. Requests keep running until they
// end when ctx is cancelled: the drain shuts the server down itself.
func newHTTPServer(ctx context.Context, h http.Handler, lim httpLimits) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: lim.ReadHeaderTimeout, ReadTimeout: lim.ReadTimeout,
		WriteTimeout: lim.WriteTimeout, IdleTimeout: lim.IdleTimeout,
		ErrorLog: nil, BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext: cork.ConnContext}
}

// connCap returns the connection cap: the configured one, lowered so that
// it leaves fdReserve descriptors of the process's limit to the rest.
func connCap(configured int, log zerolog.Logger) int {
	limit, ok := fdLimit()
	if !ok || limit <= 0 || int64(configured+fdReserve) <= limit {
		return configured
	}
	n := max(int(limit)-fdReserve, 1)
	log.Warn().Int("max_connections", configured).Int64("fd_limit", limit).Int("effective", n).
		Msg("-max-connections lowered to leave descriptors for the ledger and Postgres; raise the file limit (ulimit -n) to allow more")
	return n
}

// rawListener makes each accepted connection's reads and writes raw
// non-blocking system calls (internal/rawsock): the API's small requests and
// the change streams' frames then do not wake the Go runtime's monitor
// thread each time the daemon was idle.
type rawListener struct{ net.Listener }

func (l rawListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return rawsock.Wrap(c), nil
}

// limitListener accepts at most n connections open at once; Accept waits
// while n are open, leaving further ones in the kernel's backlog.
func limitListener(l net.Listener, n int) net.Listener {
	if n <= 0 {
		return l
	}
	return &capListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type capListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *capListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &capConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *capListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

type capConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
