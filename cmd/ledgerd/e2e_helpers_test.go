package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// cluster is the package's Postgres; every test gets its own database and
// slot. binary is the ledgerd built from this package.
var (
	cluster *pgtest.Cluster
	binary  string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	if fuzzing() {
		return m.Run() // the fuzz targets need neither Postgres nor the binary
	}
	dir, err := os.MkdirTemp("", "ledgerd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := loadOpenAPI(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binary = filepath.Join(dir, "ledgerd")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building ledgerd: %v\n%s", err, out)
		return 1
	}
	return pgtest.Run(m, pgtest.Options{}, &cluster)
}

// fuzzing reports whether this process runs a fuzz target (make fuzz): the
// coordinator (-test.fuzz) or one of its workers.
func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

const testToken = "e2e-token"

// daemon is a running ledgerd process.
type daemon struct {
	t      testing.TB
	cmd    *exec.Cmd
	addr   string
	url    string
	dsn    string
	slot   string
	dbPath string
	log    *bytes.Buffer
	done   chan error
	c      *client.Client
	// api checks every call of c and hc against api/openapi.yaml.
	api *apiChecker
	hc  *http.Client
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startDaemon runs ledgerd against dsn with the test defaults; extra flags
// override them (the flag package keeps the last value).
func startDaemon(t testing.TB, dsn, slot, dbPath string, extra ...string) *daemon {
	t.Helper()
	return startDaemonOn(t, freeAddr(t), dsn, slot, dbPath, extra...)
}

// startDaemonOn is startDaemon listening on addr.
func startDaemonOn(t testing.TB, addr, dsn, slot, dbPath string, extra ...string) *daemon {
	t.Helper()
	d := launchDaemon(t, addr, dsn, slot, dbPath, extra...)
	d.waitReady()
	return d
}

// launchDaemon is startDaemonOn without waiting for the daemon to be ready.
func launchDaemon(t testing.TB, addr, dsn, slot, dbPath string, extra ...string) *daemon {
	t.Helper()
	return launchDaemonEnv(t, nil, addr, dsn, slot, dbPath, extra...)
}

// launchDaemonEnv is launchDaemon with more environment variables.
func launchDaemonEnv(t testing.TB, env []string, addr, dsn, slot, dbPath string, extra ...string) *daemon {
	t.Helper()
	if dbPath == "" {
		dbPath = filepath.Join(t.TempDir(), "ledgerd.db")
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-slot", slot, "-publication", slot, "-create-slot", "-create-publication", "all",
		"-db", dbPath, "-listen", addr, "-token-file", tokenFile, "-status-interval", "200ms",
		"-heartbeat-interval", "0", "-ttl", "30s", "-log-level", "debug"}, extra...)
	cmd := exec.Command(binary, args...)
	// The connection string comes from the environment, as an operator's would.
	cmd.Env = append(append(os.Environ(), "LEDGERD_PG_URL="+dsn), env...)
	url := "http://" + addr
	if strings.HasPrefix(addr, "unix:") {
		url = addr
	}
	d := &daemon{t: t, cmd: cmd, addr: addr, url: url, dsn: dsn, slot: slot, dbPath: dbPath, log: &bytes.Buffer{},
		done: make(chan error, 1)}
	cmd.Stderr = &lockedWriter{b: d.log}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("ledgerd log:\n%s", d.logText())
		}
	})
	d.api = newAPIChecker(t)
	d.hc = &http.Client{Transport: d.api.transport(baseTransport(addr))}
	hc := d.hc
	if _, bench := t.(*testing.B); bench {
		// Benchmarks time the daemon, not the checking, and their
		// consumers are built as an operator's would be: on the client's
		// own transport.
		hc = nil
	}
	c, err := client.New(client.Config{URL: d.url, Token: testToken, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	d.c = c
	return d
}

// baseTransport is a transport to a daemon's -listen address.
func baseTransport(addr string) *http.Transport {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		var d net.Dialer
		return &http.Transport{MaxIdleConnsPerHost: 16, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}}
	}
	return &http.Transport{MaxIdleConnsPerHost: 16}
}

type lockedWriter struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (d *daemon) logText() string {
	if lw, ok := d.cmd.Stderr.(*lockedWriter); ok {
		lw.mu.Lock()
		defer lw.mu.Unlock()
	}
	return d.log.String()
}

func (d *daemon) waitReady() {
	d.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-d.done:
			d.done <- err
			d.t.Fatalf("ledgerd exited before it was ready: %v", err)
		default:
		}
		status, err := d.c.Do(context.Background(), "GET", "/readyz", "", nil, nil)
		if err == nil && status == 200 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatal("ledgerd did not become ready within 60s")
}

// stop sends SIGTERM and returns how long the process took to exit.
func (d *daemon) stop() time.Duration {
	d.t.Helper()
	return d.stopWithin(30 * time.Second)
}

// sql runs statements on the test database, each in its own transaction.
func sql(t testing.TB, dsn string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// queryLSN runs a query returning one pg_lsn (as text).
func queryLSN(t testing.TB, dsn, q string, args ...any) ledger.LSN {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var s *string
	if err := conn.QueryRow(ctx, q, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if s == nil {
		return 0
	}
	l, err := ledger.ParseLSN(*s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func confirmedFlush(t testing.TB, dsn, slot string) ledger.LSN {
	t.Helper()
	return queryLSN(t, dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func slotName(t testing.TB) string { return strings.TrimPrefix(pgtest.DBName(t.Name()), "t_") }

func newAuthRequest(method, url, body string) (*http.Request, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	return req, nil
}

// httpDo sends req through d's checked client and returns the body of a 200.
func (d *daemon) httpDo(req *http.Request) (string, error) {
	resp, err := d.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s %s: %d %s", req.Method, req.URL, resp.StatusCode, b)
	}
	return string(b), err
}

func (d *daemon) doError(t testing.TB, req *http.Request) (int, wire.Error) {
	t.Helper()
	resp, err := d.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var we wire.Error
	if err := json.Unmarshal(b, &we); err != nil {
		t.Errorf("%d answer is not an error object: %q", resp.StatusCode, b)
	}
	return resp.StatusCode, we
}

// registerShape registers consumer id with the given lease TTL on d and
// subscribes it to one shape.
func registerShape(t *testing.T, d *daemon, id string, ttl time.Duration, shape, table string, filter map[string][]string) *client.Consumer {
	t.Helper()
	ctx := context.Background()
	k, err := d.c.Register(ctx, client.ConsumerConfig{ID: id, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.PutShape(ctx, shape, table, filter); err != nil {
		t.Fatal(err)
	}
	return k
}
