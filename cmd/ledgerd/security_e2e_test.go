package main_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// The ledger file and its snapshot carry no lease: with the snapshot, which
// only the admin token opens, nobody can ack in a consumer's place (I1).
func TestSecretsEndToEnd(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE t (id int PRIMARY KEY)")
	adminFile := filepath.Join(t.TempDir(), "admin")
	if err := os.WriteFile(adminFile, []byte("adm1n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dsn, slot, "", "-admin-token-file", adminFile)
	k := registerShape(t, d, "c", 30*time.Second, "s", "public.t", nil)

	get := func(path, token string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", d.url+path, nil)
		req.Header.Set("Authorization", "bearer "+token)
		resp, err := d.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if status, _ := get("/v1/debug/snapshot", testToken); status != http.StatusUnauthorized {
		t.Errorf("snapshot with the consumers' token: %d, want 401", status)
	}
	status, snap := get("/v1/debug/snapshot", "adm1n")
	if status != http.StatusOK || len(snap) == 0 {
		t.Fatalf("snapshot with the admin token: %d (%d bytes)", status, len(snap))
	}
	if bytes.Contains(snap, []byte(k.Lease())) {
		t.Error("the snapshot holds the consumer's lease")
	}
	if status, _ := get("/v1/status", "adm1n"); status != http.StatusOK {
		t.Errorf("status with the admin token: %d", status)
	}
	d.stop()
	raw, err := os.ReadFile(d.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(k.Lease())) {
		t.Error("the ledger file holds the consumer's lease")
	}
}

// A second ledgerd pointed at the socket of a running one refuses it and
// exits; the first stays reachable.
func TestSecondDaemonOnSocketRefused(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	dir, err := os.MkdirTemp("", "ld")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "api.sock")
	d := startDaemonOn(t, "unix:"+sock, dsn, slot, "")

	cmd := exec.Command(binary, "-listen", "unix:"+sock, "-db", filepath.Join(t.TempDir(), "other.db"), "-slot", slot+"_2")
	cmd.Env = append(os.Environ(), "LEDGERD_PG_URL="+dsn)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("a second ledgerd started on the socket of a running one:\n%s", out)
	}
	if !strings.Contains(string(out), "running process serves this socket") {
		t.Errorf("the second ledgerd's error does not say why:\n%s", out)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("the first ledgerd is unreachable after the second one exited: %v", err)
	}
	c.Close()
	if status, err := d.c.Do(t.Context(), "GET", "/healthz", "", nil, nil); err != nil || status != 200 {
		t.Fatalf("healthz on the first ledgerd: %d %v", status, err)
	}
}
