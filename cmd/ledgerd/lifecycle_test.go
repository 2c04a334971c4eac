package main_test

import (
	"bufio"
	bin "encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// probeClient gives up on a call that gets no answer: a listener nobody
// serves yet accepts connections and answers nothing.
var probeClient = &http.Client{Timeout: 5 * time.Second}

// probe sends a GET with an optional bearer token to d and returns the
// status and body.
func probe(t testing.TB, d *daemon, path, tok string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", d.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// pgFront stands on a TCP address in front of the test cluster. Until
// proxy is set it answers every connection as a Postgres that is starting
// up (SQLSTATE 57P03); then it forwards connections to the cluster.
type pgFront struct {
	ln     net.Listener
	target string
	proxy  atomic.Bool
	wg     sync.WaitGroup
}

func startFront(t *testing.T, addr, target string) *pgFront {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &pgFront{ln: ln, target: target}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); f.wg.Wait() })
	return f
}

func (f *pgFront) serve(c net.Conn) {
	defer c.Close()
	if f.proxy.Load() {
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			return
		}
		defer up.Close()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
		go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
		<-done
		return
	}
	r := bufio.NewReader(c)
	for {
		var n int32
		if err := bin.Read(r, bin.BigEndian, &n); err != nil || n < 8 || n > 1<<16 {
			return
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		switch bin.BigEndian.Uint32(body) {
		case 80877103, 80877104: // SSLRequest, GSSENCRequest: no
			if _, err := c.Write([]byte{'N'}); err != nil {
				return
			}
			continue
		}
		var msg []byte
		for _, f := range [][2]string{{"S", "FATAL"}, {"V", "FATAL"}, {"C", "57P03"}, {"M", "the database system is starting up"}} {
			msg = append(append(append(msg, f[0][0]), f[1]...), 0)
		}
		msg = append(msg, 0)
		out := append([]byte{'E'}, bin.BigEndian.AppendUint32(nil, uint32(len(msg)+4))...)
		_, _ = c.Write(append(out, msg...))
		return
	}
}

// logLines returns the JSON log lines of d whose message is msg.
func logLines(d *daemon, msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(d.logText(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// withPort returns dsn with its host:port replaced by addr.
func withPort(dsn, addr string) string {
	at := strings.Index(dsn, "@")
	slash := strings.Index(dsn[at:], "/")
	return dsn[:at+1] + addr + dsn[at+slash:]
}

// While Postgres refuses connections, then answers that it is starting up,
// ledgerd keeps retrying with a growing backoff: /healthz answers 200
// without a token, /readyz 503 naming what it waits for, every other call
// 503 not_ready, /metrics already exports the build. Once Postgres is there
// ledgerd starts as usual.
func TestWaitsForPostgresWithProbesUp(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	front := freeAddr(t)
	d := launchDaemon(t, freeAddr(t), withPort(dsn, front), slot, "")

	waitReason := func(what string) {
		t.Helper()
		waitFor(t, "/readyz to name "+what, 30*time.Second, func() bool {
			status, body := probe(t, d, "/readyz", "")
			return status == 503 && strings.Contains(body, what)
		})
	}
	waitReason("connection refused")
	if status, body := probe(t, d, "/healthz", ""); status != 200 {
		t.Errorf("/healthz while waiting for Postgres: %d %s", status, body)
	}
	status, body := probe(t, d, "/v1/status", testToken)
	var we wire.Error
	_ = json.Unmarshal([]byte(body), &we)
	if status != 503 || we.Code != wire.CodeNotReady || !strings.Contains(we.Message, "connection refused") {
		t.Errorf("/v1/status while waiting for Postgres: %d %s, want 503 not_ready with the reason", status, body)
	}
	if status, _ := probe(t, d, "/v1/status", ""); status != 401 {
		t.Errorf("/v1/status without a token while waiting: %d, want 401", status)
	}
	if status, body := probe(t, d, "/metrics", testToken); status != 200 || !strings.Contains(body, "ledgerd_build_info{") {
		t.Errorf("/metrics while waiting for Postgres: %d %s", status, body)
	}

	f := startFront(t, front, strings.Split(strings.Split(dsn, "@")[1], "/")[0])
	waitReason("starting up")
	f.proxy.Store(true)
	d.waitReady()

	retries := logLines(d, "preflight failed, retrying")
	if len(retries) < 2 {
		t.Fatalf("%d retries logged, want at least 2", len(retries))
	}
	first, last := retries[0]["retry_in"].(float64), retries[len(retries)-1]["retry_in"].(float64)
	if !(last > first) {
		t.Errorf("retry_in went from %v to %v: want a growing backoff", first, last)
	}
	if n := len(logLines(d, "ledgerd serving")); n != 1 {
		t.Errorf("%d 'ledgerd serving' lines, want 1", n)
	}
	d.stop()
}

// exitOf waits for d to exit on its own and returns its exit status.
func exitOf(t *testing.T, d *daemon, within time.Duration) int {
	t.Helper()
	select {
	case err := <-d.done:
		d.done <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(within):
		t.Fatalf("ledgerd still runs after %v; want it to exit", within)
		return -1
	}
}

// A permanent preflight failure ends the start at once, non-zero, with the
// fix named: retrying cannot create a database or a role, and retrying a
// wrong password only fills the server's log.
func TestPermanentPreflightFailuresExit(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	role := slotName(t) + "_pw"
	sql(t, dsn, "CREATE ROLE "+role+" LOGIN REPLICATION PASSWORD 'right'")
	t.Cleanup(func() { _ = cluster.Exec(t.Context(), "postgres", "DROP ROLE IF EXISTS "+role) })
	hba := filepath.Join(cluster.DataDir(), "pg_hba.conf")
	orig, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	rules := "host all " + role + " 127.0.0.1/32 scram-sha-256\nhost replication " + role + " 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(hba, append([]byte(rules), orig...), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.WriteFile(hba, orig, 0o600)
		_ = cluster.Exec(t.Context(), "postgres", "SELECT pg_reload_conf()")
	})
	if err := cluster.Exec(t.Context(), "postgres", "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	db := dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")]
	tests := []struct {
		name, dsn string
		want      []string
	}{
		{"database does not exist", strings.Replace(dsn, "/"+db+"?", "/no_such_db?", 1),
			[]string{"database does not exist", `CREATE DATABASE "no_such_db"`}},
		{"role does not exist", strings.Replace(dsn, "postgres@", "no_such_role@", 1),
			[]string{"role does not exist", `CREATE ROLE "no_such_role"`}},
		{"wrong password", strings.Replace(dsn, "postgres@", role+":wrong@", 1),
			[]string{"password authentication failed", `correct the password of role "` + role + `"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := launchDaemon(t, freeAddr(t), tc.dsn, slotName(t), "")
			if code := exitOf(t, d, 30*time.Second); code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			log := d.logText()
			for _, w := range tc.want {
				if !strings.Contains(log, w) {
					t.Errorf("the exit message does not say %q:\n%s", w, log)
				}
			}
			if n := len(logLines(d, "preflight failed, retrying")); n != 0 {
				t.Errorf("%d retries of a permanent failure", n)
			}
		})
	}
}

// ledgerd -version prints the version the build was linked with, and
// /metrics exports it as ledgerd_build_info, which answers before Postgres
// is reached.
func TestVersion(t *testing.T) {
	tagged := filepath.Join(t.TempDir(), "ledgerd")
	out, err := exec.Command("go", "build", "-ldflags", "-X github.com/ledgerd/ledgerd/internal/version.Version=v7.7.7-test",
		"-o", tagged, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err = exec.Command(tagged, "-version").Output()
	if err != nil || !strings.HasPrefix(string(out), "ledgerd v7.7.7-test go1.") {
		t.Errorf("-version: %q %v", out, err)
	}
	out, err = exec.Command(binary, "-version").Output()
	if err != nil || !strings.HasPrefix(string(out), "ledgerd ") || len(strings.Fields(string(out))) != 3 {
		t.Errorf("-version of a build without the version set: %q %v", out, err)
	}

	addr := freeAddr(t)
	cmd := exec.Command(tagged, "-pg-url", "postgres://postgres@"+freeAddr(t)+"/x?sslmode=disable", "-listen", addr, "-db", filepath.Join(t.TempDir(), "l.db"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var body string
	waitFor(t, "/metrics", 30*time.Second, func() bool {
		resp, err := probeClient.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	})
	if !strings.Contains(body, `version="v7.7.7-test"} 1`) || !strings.Contains(body, `ledgerd_build_info{go_version="go`) {
		t.Errorf("ledgerd_build_info:\n%s", body)
	}
}

// Under systemd (Type=notify) ledgerd says READY=1 once it streams and
// /readyz answers 200, pings WATCHDOG=1 at half of WATCHDOG_USEC while its
// reconcile loop runs, and says STOPPING=1 when it drains. The service
// manager's socket is one the test makes.
func TestSystemdNotify(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	d := launchDaemonEnv(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=400000"}, freeAddr(t), dsn, slotName(t), "")
	next := func(what string, want func(string) bool) string {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case m := <-msgs:
				if want(m) {
					return m
				}
			case <-deadline:
				t.Fatalf("no %s notification within 60s\n%s", what, d.logText())
			}
		}
	}
	var seen []string
	next("READY=1", func(m string) bool {
		seen = append(seen, m)
		return strings.HasPrefix(m, "READY=1")
	})
	if status, body := probe(t, d, "/readyz", ""); status != 200 {
		t.Errorf("READY=1 sent while /readyz answers %d %s", status, body)
	}
	if !strings.Contains(strings.Join(seen, "|"), "STATUS=checking Postgres") {
		t.Errorf("no STATUS while starting: %q", seen)
	}
	start := time.Now()
	for range 3 {
		next("WATCHDOG=1", func(m string) bool { return m == "WATCHDOG=1" })
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("3 watchdog pings took %v at a 400ms watchdog", took)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next("STOPPING=1", func(m string) bool { return strings.HasPrefix(m, "STOPPING=1") })
	if code := exitOf(t, d, 30*time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}
}
