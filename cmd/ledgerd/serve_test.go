package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
)

// testLimits are the API server's limits shrunk so that tests see them act.
func testLimits() httpLimits {
	lim := defaultHTTPLimits(8)
	lim.ReadHeaderTimeout, lim.ReadTimeout, lim.IdleTimeout = 300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond
	return lim
}

// serveAPI runs the real API, with a bearer token, behind newHTTPServer.
func serveAPI(t *testing.T, lim httpLimits) (addr string, l *ledger.Ledger) {
	t.Helper()
	l, err := ledger.Open(ledger.Config{Path: filepath.Join(t.TempDir(), "ledger.db"),
		Identity: ledger.Identity{SystemID: "1", Slot: "s"}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	hub := deliver.New(deliver.Config{Ledger: l, KeepaliveInterval: 50 * time.Millisecond})
	srv := newHTTPServer(context.Background(), api.New(api.Config{Ledger: l, Hub: hub, Token: "tok"}).Handler(), lim)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(limitListener(ln, lim.MaxConns)) }()
	t.Cleanup(func() {
		hub.Close()
		_ = srv.Close()
		_ = l.Close()
	})
	return ln.Addr().String(), l
}

// waitClosed reads from c until the server closes it. The deadline only
// keeps a broken build from hanging the test run.
func waitClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server keeps %s open", what)
	}
}

// A connection that sends headers and withholds the body it announced
// (here an unauthenticated one, answered 401 at once) is closed by the
// server; so is an idle keep-alive connection. Before, both stayed open
// forever, and a few hundred of them used up the daemon's descriptors.
func TestServerClosesConnectionsThatHoldBack(t *testing.T) {
	addr, _ := serveAPI(t, testLimits())

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /v1/consumers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c, "a connection that withholds its body")

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	waitClosed(t, idle, "an idle keep-alive connection")
}

// A change stream is a long call: the read timeout, which bounds reading
// the request, must not end it.
func TestStreamOutlivesReadTimeout(t *testing.T) {
	lim := testLimits()
	addr, _ := serveAPI(t, lim)
	c, err := client.New(client.Config{URL: "http://" + addr, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k, err := c.Register(ctx, client.ConsumerConfig{ID: "c", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	end := time.Now().Add(5 * lim.ReadTimeout)
	for n := 0; time.Now().Before(end); n++ {
		if _, _, err := s.Next(); err != nil {
			t.Fatalf("the stream ended after %d frames: %v", n, err)
		}
	}
}

// At the cap, further connections wait in the kernel's backlog instead of
// taking descriptors; they are served once a connection closes.
func TestConnectionCap(t *testing.T) {
	lim := testLimits()
	lim.MaxConns = 2
	lim.ReadHeaderTimeout, lim.ReadTimeout, lim.IdleTimeout = time.Minute, time.Minute, time.Minute
	addr, _ := serveAPI(t, lim)
	var held []net.Conn
	for range lim.MaxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Prove the server accepted it: a full request and its answer.
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("healthz: %v %v", resp, err)
		}
		held = append(held, c)
	}
	answered := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+addr+"/healthz", nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a connection over the cap was served (%v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	held[0].Close()
	if err := <-answered; err != nil {
		t.Fatalf("a waiting connection after one closed: %v", err)
	}
}

func TestConfigSecurityFlags(t *testing.T) {
	env := map[string]string{"LEDGERD_PG_URL": "postgres://env/db", "LEDGERD_ADMIN_TOKEN_FILE": "/etc/ledgerd/admin"}
	cfg, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AdminTokenFile != "/etc/ledgerd/admin" || cfg.MaxConnections != DefaultMaxConnections {
		t.Errorf("admin token file %q, max connections %d", cfg.AdminTokenFile, cfg.MaxConnections)
	}
	_, err = parseConfig([]string{"-max-connections", "0"}, func(k string) string { return env[k] }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-max-connections must be at least 1") {
		t.Errorf("-max-connections 0: %v", err)
	}
}

// The cap leaves descriptors for the ledger and Postgres under a low limit.
func TestConnCapLeavesDescriptors(t *testing.T) {
	limit, ok := fdLimit()
	if !ok {
		t.Fatal("no file limit on this system")
	}
	if got := connCap(int(limit), zerolog.Nop()); int64(got) > limit-fdReserve {
		t.Errorf("cap %d under a limit of %d descriptors", got, limit)
	}
	if got := connCap(1, zerolog.Nop()); got != 1 {
		t.Errorf("cap %d, want 1", got)
	}
}
