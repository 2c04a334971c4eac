package api_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
)

const adminToken = "adm1n"

// newAdminEnv is newEnv with an admin token as well.
func newAdminEnv(t *testing.T) *env {
	t.Helper()
	path := t.TempDir() + "/ledger.db"
	l, err := ledger.Open(ledger.Config{Path: path, Identity: ledger.Identity{SystemID: "1", Slot: "ledgerd"}})
	if err != nil {
		t.Fatal(err)
	}
	hub := deliver.New(deliver.Config{Ledger: l, KeepaliveInterval: time.Hour})
	s := api.New(api.Config{Ledger: l, Hub: hub, Tables: tables{"public.orders": true},
		SlotName: "ledgerd", Token: token, AdminToken: adminToken})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		hub.Close()
		srv.Close()
		if err := l.Close(); err != nil {
			t.Errorf("closing the ledger: %v", err)
		}
	})
	c, err := client.New(client.Config{URL: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, l: l, hub: hub, srv: srv, c: c}
}

// With an admin token, the debug calls and the operator's eviction need it:
// the consumers' token, which every consumer process holds, no longer opens
// a copy of the ledger or evicts another consumer's shapes. The admin token
// opens every other call too, so inspect -url works with it alone.
func TestAdminToken(t *testing.T) {
	e := newAdminEnv(t)
	k := e.register("c1")
	if _, err := k.PutShape(context.Background(), "s1", "public.orders", nil); err != nil {
		t.Fatal(err)
	}
	consumer, admin := "Bearer "+token, "Bearer "+adminToken
	tests := []struct {
		name, method, path, auth, body string
		status                         int
	}{
		{"snapshot with the consumers' token", "GET", "/v1/debug/snapshot", consumer, "", 401},
		{"snapshot without a token", "GET", "/v1/debug/snapshot", "", "", 401},
		{"evict with the consumers' token", "POST", "/v1/shapes/s1/evict", consumer, `{"dry_run":true}`, 401},
		{"evict with the admin token", "POST", "/v1/shapes/s1/evict", admin, `{"dry_run":true}`, 200},
		{"snapshot with the admin token", "GET", "/v1/debug/snapshot", admin, "", 200},
		{"status with the consumers' token", "GET", "/v1/status", consumer, "", 200},
		{"status with the admin token", "GET", "/v1/status", admin, "", 200},
		{"status without a token", "GET", "/v1/status", "", "", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, we := e.raw(tc.method, tc.path, "", tc.auth, tc.body)
			if status != tc.status {
				t.Errorf("%s %s: %d %q (%s), want %d", tc.method, tc.path, status, we.Code, we.Message, tc.status)
			}
			if status == 401 && we.Code != wire.CodeUnauthorized {
				t.Errorf("code %q, want %q", we.Code, wire.CodeUnauthorized)
			}
		})
	}
	if _, ok := e.l.Shape("s1"); !ok {
		t.Fatal("a dry run or a refused eviction evicted s1")
	}
}

// The lease handed to a consumer is in no answer, view or snapshot: a stolen
// snapshot lets nobody ack in the consumer's place.
func TestNoViewCarriesALease(t *testing.T) {
	e := newEnv(t)
	k := e.register("c1")
	for _, p := range []string{"/v1/debug/snapshot", "/v1/consumers", "/v1/consumers/c1", "/v1/events", "/v1/status"} {
		req, _ := http.NewRequest("GET", e.srv.URL+p, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, b)
		}
		if bytes.Contains(b, []byte(k.Lease())) {
			t.Errorf("GET %s carries the consumer's lease", p)
		}
	}
}

// RFC 7235: the authentication scheme is case-insensitive.
func TestBearerSchemeCaseInsensitive(t *testing.T) {
	e := newEnv(t)
	for _, auth := range []string{"Bearer " + token, "bearer " + token, "BEARER " + token, "bEaReR  " + token} {
		if status, we := e.raw("GET", "/v1/status", "", auth, ""); status != 200 {
			t.Errorf("Authorization %q: %d %s", auth, status, we.Message)
		}
	}
	for _, auth := range []string{"Basic " + token, token, "Bearer", "Bearer " + token + "x", "Bearer" + token} {
		if status, _ := e.raw("GET", "/v1/status", "", auth, ""); status != 401 {
			t.Errorf("Authorization %q: %d, want 401", auth, status)
		}
	}
}

// smallBuffers makes the kernel hold little of what is written to a peer
// that does not read, so the writer blocks early.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// A client that opens the snapshot and never reads it must not stop the
// ledger's writes. bbolt cannot grow its file while a read transaction is
// open; the snapshot used to be written to the socket inside one, so once
// the file had to grow every registration and ack waited for that client.
func TestStalledSnapshotReaderDoesNotBlockWrites(t *testing.T) {
	path := t.TempDir() + "/ledger.db"
	l, err := ledger.Open(ledger.Config{Path: path, Identity: ledger.Identity{SystemID: "1", Slot: "ledgerd"}})
	if err != nil {
		t.Fatal(err)
	}
	hub := deliver.New(deliver.Config{Ledger: l, KeepaliveInterval: time.Hour})
	s := api.New(api.Config{Ledger: l, Hub: hub, Tables: tables{"public.orders": true}, SlotName: "ledgerd", Token: token})
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	defer func() {
		hub.Close()
		srv.CloseClientConnections()
		srv.Close()
		_ = l.Close()
	}()
	// A file of a few MiB, more than the socket buffers hold.
	host := strings.Repeat("h", 64<<10)
	grow := func(prefix string, n int) error {
		for i := range n {
			if _, err := l.Register(ledger.ConsumerSpec{ID: fmt.Sprintf("%s%d", prefix, i), Host: host}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := grow("big", 40); err != nil {
		t.Fatal(err)
	}

	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	stalled := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	req, _ := http.NewRequest("GET", srv.URL+"/v1/debug/snapshot", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := stalled.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // never read
	if resp.StatusCode != 200 {
		t.Fatalf("snapshot: %d", resp.StatusCode)
	}

	done := make(chan error, 1)
	go func() {
		// Enough to make bbolt grow its file and remap it.
		if err := grow("more", 60); err != nil {
			done <- err
			return
		}
		c, err := client.New(client.Config{URL: srv.URL, Token: token})
		if err != nil {
			done <- err
			return
		}
		ctx := context.Background()
		k, err := c.Register(ctx, client.ConsumerConfig{ID: "late", TTL: time.Minute})
		if err != nil {
			done <- err
			return
		}
		if _, err := k.PutShape(ctx, "s1", "public.orders", nil); err != nil {
			done <- err
			return
		}
		_, err = k.Heartbeat(ctx, nil)
		done <- err
	}()
	// Not a timing threshold: without the fix these writes never finish
	// while the client holds the snapshot open.
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("registrations and heartbeats are blocked behind a snapshot reader that stopped reading")
	}
}
