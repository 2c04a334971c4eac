package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// testDaemon runs the real ledgerd binary against dsn. It returns its API
// URL, its ledger file and its token file.
func testDaemon(t *testing.T, dsn string) (url, dbPath, tokenFile string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "ledgerd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/ledgerd").CombinedOutput(); err != nil {
		t.Fatalf("building ledgerd: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dbPath = filepath.Join(dir, "ledgerd.db")
	tokenFile = filepath.Join(dir, "token")
	check(t, os.WriteFile(tokenFile, []byte("tok\n"), 0o600))
	cmd := exec.Command(bin, "-slot", "inspect_e2e", "-publication", "inspect_e2e", "-create-slot", "-create-publication", "all",
		"-db", dbPath, "-listen", addr, "-token-file", tokenFile, "-status-interval", "200ms", "-heartbeat-interval", "0", "-ttl", "10m")
	cmd.Env = append(os.Environ(), "LEDGERD_PG_URL="+dsn)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	check(t, cmd.Start())
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("ledgerd log:\n%s", log.String())
		}
	})
	url = "http://" + addr
	waitFor(t, "ledgerd ready", func() bool {
		select {
		case <-done: // no point waiting for a daemon that is gone; the log says why
			t.Fatalf("ledgerd exited before it was ready: %v", waitErr)
		default:
		}
		req, _ := http.NewRequest("GET", url+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return url, dbPath, tokenFile
}

// waitFor polls cond until it holds; the 60s deadline only bounds a broken
// run, it is no timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 60s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func call(t *testing.T, method, url, lease string, body, out any) int {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(method, url, bytes.NewReader(b))
	check(t, err)
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("Content-Type", "application/json")
	if lease != "" {
		req.Header.Set(wire.HeaderLease, lease)
	}
	resp, err := http.DefaultClient.Do(req)
	check(t, err)
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// testRealDaemon: a shape that received a transaction and never acked it
// pins the real daemon's slot; inspect -url -pg names it with the bytes it
// pins, and -db on the daemon's locked file says to use -url.
func testRealDaemon(t *testing.T, c *pgtest.Cluster) {
	dsn := pgtest.NewDB(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dbName := pgtest.DBName(t.Name())
	check(t, c.Exec(ctx, dbName, `CREATE TABLE t (id int primary key, v text)`))
	url, dbPath, tokenFile := testDaemon(t, dsn)

	var reg wire.RegisterResponse
	if code := call(t, "POST", url+"/v1/consumers", "", wire.RegisterRequest{ID: "c1", TTLMS: 600000}, &reg); code != http.StatusCreated {
		t.Fatalf("register: %d", code)
	}
	if code := call(t, "PUT", url+"/v1/shapes/stuck", reg.Lease, wire.ShapeRequest{Consumer: "c1", Table: "public.t"}, nil); code != http.StatusCreated {
		t.Fatalf("put shape: %d", code)
	}
	check(t, c.Exec(ctx, dbName, `INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g`))
	waitFor(t, "shape stuck pending", func() bool {
		var hs []wire.Shape
		call(t, "GET", url+"/v1/shapes?holding=1", "", nil, &hs)
		return len(hs) == 1 && hs[0].ID == "stuck"
	})
	check(t, c.Exec(ctx, dbName, `INSERT INTO t SELECT g, 'y' FROM generate_series(101, 2000) g`))

	r := runInspectAt(t, time.Now, nil, "-url", url, "-token-file", tokenFile, "-pg", dsn, "-json", "why")
	if r.code != exitOK {
		t.Fatalf("why: exit %d: %s", r.code, r.stderr)
	}
	var w WhyReport
	check(t, json.Unmarshal([]byte(r.stdout), &w))
	if w.Cause != causeShapePin || w.Shape != "stuck" || !strings.Contains(w.Paragraph, "pending since") {
		t.Errorf("why = %+v, want the live pin of shape stuck", w)
	}
	for _, cmd := range []string{"why", "holders", "status"} {
		r := runInspectAt(t, time.Now, map[string]string{"LEDGERD_TOKEN": "tok"}, "-url", url, "-pg", dsn, cmd)
		if r.code != exitOK {
			t.Errorf("%s: exit %d: %s", cmd, r.code, r.stderr)
		}
		t.Logf("inspect -url -pg %s:\n%s", cmd, r.stdout)
	}
	r = runInspectAt(t, time.Now, map[string]string{"LEDGERD_TOKEN": "tok"}, "-url", url, "-pg", dsn, "-json", "holders")
	var hr HoldersReport
	check(t, json.Unmarshal([]byte(r.stdout), &hr))
	if len(hr.Holders) != 1 || !hr.Holders[0].Certain || hr.Holders[0].PinnedBytes == nil || *hr.Holders[0].PinnedBytes <= 0 ||
		!strings.HasPrefix(hr.Holders[0].BytesSource, fromPG) {
		t.Errorf("holders = %+v, want stuck with bytes measured by Postgres", hr)
	}
	if r := runInspectAt(t, time.Now, map[string]string{"LEDGERD_TOKEN": "tok"}, "-url", url, "-pg", dsn, "verify"); r.code != exitOK {
		t.Errorf("verify against the running daemon: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runInspectAt(t, time.Now, nil, "-db", dbPath, "status")
	if r.code != exitCannot || !strings.Contains(r.stderr, "-url") {
		t.Errorf("-db on the daemon's file: exit %d, stderr %s", r.code, r.stderr)
	}
}
