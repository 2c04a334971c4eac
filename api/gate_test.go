package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
)

// get sends a GET with an optional bearer token and returns the status and
// the body.
func get(t *testing.T, url, tok string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func errorCode(t *testing.T, body string) wire.Error {
	t.Helper()
	var we wire.Error
	if err := json.Unmarshal([]byte(body), &we); err != nil {
		t.Fatalf("not an error object: %q", body)
	}
	return we
}

// The probes answer without a token: an orchestrator's liveness and
// readiness checks cannot send one, and they carry no data. Every other
// call still needs it, and an unclean path that names a probe is no way
// around it.
func TestProbesNeedNoToken(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		if status, body := get(t, e.srv.URL+p, ""); status != 200 {
			t.Errorf("GET %s without a token: %d %s, want 200", p, status, body)
		}
	}
	for _, p := range []string{"/metrics", "/v1/status", "/v1/shapes", "/readyz/../v1/status", "/healthz/"} {
		if status, body := get(t, e.srv.URL+p, ""); status != 401 {
			t.Errorf("GET %s without a token: %d %s, want 401", p, status, body)
		}
	}
}

// Until the ledger is open the Gate answers the probes and metrics, and
// every other call 503 not_ready with the reason; once it hands over to the
// Server, the API answers as usual, on the same registry.
func TestGateBeforeAndAfterTheLedgerOpens(t *testing.T) {
	g := api.NewGate(api.GateConfig{Token: token, Version: "v9.8.7-test"})
	srv := httptest.NewServer(g)
	defer srv.Close()
	g.NotReady("waiting for Postgres: connection refused")

	if status, body := get(t, srv.URL+"/healthz", ""); status != 200 {
		t.Errorf("healthz while starting: %d %s", status, body)
	}
	status, body := get(t, srv.URL+"/readyz", "")
	if we := errorCode(t, body); status != 503 || we.Code != wire.CodeNotReady || !strings.Contains(we.Message, "connection refused") {
		t.Errorf("readyz while starting: %d %s, want 503 not_ready naming the reason", status, body)
	}
	for _, p := range []string{"/v1/status", "/v1/shapes", "/v1/debug/snapshot"} {
		status, body := get(t, srv.URL+p, token)
		if we := errorCode(t, body); status != 503 || we.Code != wire.CodeNotReady || !strings.Contains(we.Message, "waiting for Postgres") {
			t.Errorf("GET %s while starting: %d %s, want 503 not_ready with the reason", p, status, body)
		}
	}
	if status, _ := get(t, srv.URL+"/v1/status", ""); status != 401 {
		t.Errorf("GET /v1/status without a token while starting: %d, want 401", status)
	}
	if status, _ := get(t, srv.URL+"/metrics", ""); status != 401 {
		t.Errorf("GET /metrics without a token while starting: %d, want 401", status)
	}
	status, body = get(t, srv.URL+"/metrics", token)
	if status != 200 || !strings.Contains(body, `ledgerd_build_info{go_version="go`) || !strings.Contains(body, `version="v9.8.7-test"} 1`) {
		t.Errorf("metrics while starting: %d\n%s", status, body)
	}

	path := t.TempDir() + "/ledger.db"
	l, err := ledger.Open(ledger.Config{Path: path, Identity: ledger.Identity{SystemID: "1", Slot: "ledgerd"}})
	if err != nil {
		t.Fatal(err)
	}
	hub := deliver.New(deliver.Config{Ledger: l, KeepaliveInterval: time.Hour})
	defer func() {
		hub.Close()
		_ = l.Close()
	}()
	g.Serve(api.New(api.Config{Ledger: l, Hub: hub, SlotName: "ledgerd", Token: token, Registry: g.Registry()}))
	for _, p := range []string{"/readyz", "/healthz"} {
		if status, body := get(t, srv.URL+p, ""); status != 200 {
			t.Errorf("GET %s once serving: %d %s", p, status, body)
		}
	}
	if status, body := get(t, srv.URL+"/v1/status", token); status != 200 {
		t.Errorf("GET /v1/status once serving: %d %s", status, body)
	}
	status, body = get(t, srv.URL+"/metrics", token)
	for _, want := range []string{"ledgerd_build_info{", "ledgerd_safe_flush_lsn "} {
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics once serving: %d, want %s in\n%s", status, want, body)
		}
	}
}
