package client_test

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/client"
)

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:7070", "ftp://x", "http://"} {
		if _, err := client.New(client.Config{URL: u}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

// TestUnixSocketAndErrors serves a fake daemon on a unix socket: the client
// dials it, sends the token and lease, and decodes error objects (and
// answers that are not error objects) into *client.Error.
func TestUnixSocketAndErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/consumers", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":"unauthorized","message":"no"}`))
			return
		}
		w.WriteHeader(201)
		_, _ = w.Write([]byte(`{"id":"c","lease":"L","ttl_ms":5000,"expires_at":"2026-01-01T00:00:00Z"}`))
	})
	mux.HandleFunc("POST /v1/consumers/c/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(wire.HeaderLease) != "L" {
			t.Errorf("lease header %q", r.Header.Get(wire.HeaderLease))
		}
		w.WriteHeader(410)
		_, _ = w.Write([]byte(`{"error":"lease_gone","message":"gone","reason":"lease_expired"}`))
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(502)
		_, _ = w.Write([]byte("bad gateway"))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	ctx := context.Background()
	c, err := client.New(client.Config{URL: "unix:" + sock, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.Register(ctx, client.ConsumerConfig{ID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if k.Lease() != "L" || k.TTL().Milliseconds() != 5000 {
		t.Errorf("consumer %s lease %q ttl %v", k.ID(), k.Lease(), k.TTL())
	}
	_, err = k.Heartbeat(ctx, nil)
	var ce *client.Error
	if !client.IsGone(err) || !client.IsCode(err, wire.CodeLeaseGone) {
		t.Errorf("heartbeat error %v, want 410 lease_gone", err)
	} else if errorsAs(err, &ce); ce.Reason != "lease_expired" {
		t.Errorf("reason %q", ce.Reason)
	}
	_, err = c.Status(ctx)
	if !errorsAs(err, &ce) || ce.Status != 502 || ce.Message != "bad gateway" {
		t.Errorf("non-JSON error answer: %v", err)
	}
	bad, _ := client.New(client.Config{URL: "unix:" + sock})
	if _, err := bad.Register(ctx, client.ConsumerConfig{ID: "c"}); !client.IsCode(err, wire.CodeUnauthorized) {
		t.Errorf("register without the token: %v", err)
	}
}
