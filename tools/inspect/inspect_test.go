package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/ledgerd/ledgerd/internal/clocktest"
	"github.com/ledgerd/ledgerd/ledger"
)

// The tests call Main in-process (package main) so that output goes to a
// buffer and the clock is fixed.

var update = flag.Bool("update", false, "rewrite the golden files under testdata/inspect")

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// inspectNow is the fixed "now" of every inspect run in the golden tests.
var inspectNow = t0.Add(50 * time.Second)

var testIdentity = ledger.Identity{SystemID: "7301234567890123456", Timeline: 1, Database: "app", Slot: "ledgerd"}

type fakeClock = clocktest.Clock

// must returns v, or panics on err (a failed test setup step).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// buildLedger writes the golden scenario at path with the ledger API:
//   - consumer "api" (ttl 30s) heartbeats and has acked everything;
//   - consumer "batch" (ttl 10s) stopped at t0 and never acked 0/1000, so
//     its shape orders-all holds the flush at 0/1000;
//   - consumer "tmp" released its shape; shape "legacy" was evicted by hand.
func buildLedger(t testing.TB, path string) {
	t.Helper()
	clk := clocktest.New(t0)
	l := must(ledger.Open(ledger.Config{Path: path, Identity: testIdentity, Clock: clk, Logger: zerolog.Nop()}))
	api := must(l.Register(ledger.ConsumerSpec{ID: "api", TTL: 30 * time.Second, Host: "web-1", PID: 4242}))
	must(l.Register(ledger.ConsumerSpec{ID: "batch", TTL: 10 * time.Second, Host: "batch-7", PID: 77}))
	tmp := must(l.Register(ledger.ConsumerSpec{ID: "tmp", TTL: 10 * time.Second}))
	for _, s := range []ledger.ShapeSpec{
		{ID: "orders-eu", Consumer: "api", Table: "public.orders", Filter: map[string][]string{"region": {"eu"}}},
		{ID: "orders-all", Consumer: "batch", Table: "public.orders"},
		{ID: "users", Consumer: "api", Table: "public.users"},
		{ID: "scratch", Consumer: "tmp", Table: "public.scratch"},
		{ID: "legacy", Consumer: "api", Table: "public.legacy"},
	} {
		_, _, err := l.PutShape(s)
		check(t, err)
	}
	clk.Advance(time.Second)
	l.Track(0x1000, 0x1050, []string{"orders-eu", "orders-all"})
	check(t, l.Ack("orders-eu", 0x1000))
	clk.Advance(time.Second)
	l.Track(0x2000, 0x2050, []string{"orders-eu", "users", "scratch"})
	check(t, l.Ack("orders-eu", 0x2000))
	check(t, l.Ack("users", 0x2000))
	check(t, l.Ack("scratch", 0x2000))
	ctx := context.Background()
	for range 3 {
		check(t, l.Sync(ctx))
		l.FlushLSN()
	}
	check(t, l.Release("tmp", tmp.Lease))
	must(l.Evict("legacy", ledger.ReasonManual, "table dropped", "operator"))
	clk.Advance(40 * time.Second)
	must(l.Heartbeat("api", api.Lease, []string{"orders-eu", "users"}))
	check(t, l.RecordTick(clk.Now()))
	check(t, l.Sync(ctx))
	check(t, l.Close())
}

// result of one inspect run.
type result struct {
	stdout, stderr string
	code           int
}

func runInspect(t testing.TB, env map[string]string, args ...string) result {
	t.Helper()
	return runInspectAt(t, func() time.Time { return inspectNow }, env, args...)
}

// runInspectAt runs inspect with the clock now.
func runInspectAt(t testing.TB, now func() time.Time, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, Env{Stdout: &out, Stderr: &errb, Now: now,
		Getenv: func(k string) string { return env[k] }})
	return result{out.String(), errb.String(), code}
}

// golden compares got with testdata/inspect/<dir>/<name>, or rewrites it
// with -update.
func golden(t *testing.T, dir, name, got string) {
	t.Helper()
	path := filepath.Join(goldenRoot, dir, name)
	if *update {
		check(t, os.MkdirAll(filepath.Dir(path), 0o755))
		check(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test ./tools/inspect/ -update to create it): %v", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (run with -update if the change is intended)\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

var goldenRoot = must(filepath.Abs(filepath.Join("..", "..", "testdata", "inspect")))

var goldenCases = []struct {
	name string
	args []string
}{
	{"status", []string{"status"}},
	{"holders", []string{"holders"}},
	{"why", []string{"why"}},
	{"shape", []string{"shape", "orders-all"}},
	{"shape_evicted", []string{"shape", "legacy"}},
	{"consumer", []string{"consumer", "api"}},
	{"evictions", []string{"evictions"}},
	{"verify", []string{"verify"}},
	{"export", []string{"export"}},
}

// TestGolden runs every command on the scenario ledger, as text and as JSON,
// from the default -db (ledgerd.db in the working directory).
func TestGolden(t *testing.T) {
	dir := t.TempDir()
	buildLedger(t, filepath.Join(dir, "ledgerd.db"))
	t.Chdir(dir)
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			r := runInspect(t, nil, c.args...)
			if r.code != exitOK {
				t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
			}
			if c.name != "export" {
				golden(t, c.name, "stdout.txt", r.stdout)
			}
			rj := runInspect(t, nil, append([]string{"-json"}, c.args...)...)
			if rj.code != exitOK {
				t.Fatalf("-json: exit %d, stderr: %s", rj.code, rj.stderr)
			}
			golden(t, c.name, "stdout.json", rj.stdout)
			// -json after the command is the same.
			ra := runInspect(t, nil, append(append([]string{}, c.args...), "-json")...)
			if ra.stdout != rj.stdout {
				t.Errorf("%v -json differs from -json %v", c.args, c.args)
			}
		})
	}
}

func fileSum(t testing.TB, path string) ([32]byte, time.Time) {
	t.Helper()
	b := must(os.ReadFile(path))
	fi := must(os.Stat(path))
	return sha256.Sum256(b), fi.ModTime()
}

// TestReadOnly: running every command (and every error path) leaves the
// file's bytes and modification time untouched.
func TestReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledgerd.db")
	buildLedger(t, path)
	sum, mtime := fileSum(t, path)
	for _, c := range goldenCases {
		for _, j := range []bool{false, true} {
			args := []string{"-db", path}
			if j {
				args = append(args, "-json")
			}
			r := runInspect(t, nil, append(args, c.args...)...)
			if r.code != exitOK {
				t.Fatalf("%v: exit %d: %s", c.args, r.code, r.stderr)
			}
		}
	}
	runInspect(t, nil, "-db", path, "shape", "nope")
	runInspect(t, nil, "-db", path, "consumer", "nope")
	sum2, mtime2 := fileSum(t, path)
	if sum != sum2 {
		t.Error("the ledger file's bytes changed")
	}
	if !mtime.Equal(mtime2) {
		t.Errorf("the ledger file's mtime changed: %s -> %s", mtime, mtime2)
	}
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledgerd.db")
	buildLedger(t, path)
	cases := []struct {
		name string
		args []string
		code int
		msg  string // in stderr
	}{
		{"no command", []string{"-db", path}, exitCannot, "no command"},
		{"unknown command", []string{"-db", path, "frobnicate"}, exitCannot, "unknown command"},
		{"unknown flag", []string{"-db", path, "-nope", "status"}, exitCannot, "-nope"},
		{"unknown command flag", []string{"-db", path, "status", "-nope"}, exitCannot, "-nope"},
		{"shape without id", []string{"-db", path, "shape"}, exitCannot, "shape [-json] ID"},
		{"status with an argument", []string{"-db", path, "status", "extra"}, exitCannot, "takes no argument"},
		{"db and url", []string{"-db", path, "-url", "http://127.0.0.1:1", "status"}, exitCannot, "not both"},
		{"bad url", []string{"-url", "127.0.0.1:7070", "status"}, exitCannot, "http://HOST:PORT"},
		{"missing file", []string{"-db", filepath.Join(dir, "nope.db"), "status"}, exitCannot, "does not exist"},
		{"not a ledger", []string{"-db", filepath.Join(dir, "junk.db"), "status"}, exitCannot, "-db"},
		{"unknown shape", []string{"-db", path, "shape", "nope"}, exitCannot, "not in the ledger"},
		{"unknown consumer", []string{"-db", path, "consumer", "nope"}, exitCannot, "not in the ledger"},
		{"unreachable daemon", []string{"-url", "http://127.0.0.1:1", "status"}, exitCannot, "is ledgerd running"},
		{"verify ok", []string{"-db", path, "verify"}, exitOK, ""},
		{"help", []string{"-h"}, exitOK, ""},
	}
	check(t, os.WriteFile(filepath.Join(dir, "junk.db"), bytes.Repeat([]byte("not a ledger "), 2000), 0o600))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runInspect(t, nil, c.args...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d; stderr: %s", r.code, c.code, r.stderr)
			}
			if !strings.Contains(r.stderr, c.msg) {
				t.Errorf("stderr %q does not contain %q", r.stderr, c.msg)
			}
		})
	}
}

// TestLocked: a file held by a running ledger is refused with exit 2 and the
// -url hint.
func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledgerd.db")
	l := must(ledger.Open(ledger.Config{Path: path, Identity: testIdentity, Logger: zerolog.Nop()}))
	defer l.Close()
	r := runInspect(t, nil, "-db", path, "status")
	if r.code != exitCannot {
		t.Fatalf("exit %d, want 2; stdout %s stderr %s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "locked by a running ledgerd") || !strings.Contains(r.stderr, "-url") {
		t.Errorf("stderr does not say the file is locked and suggest -url: %s", r.stderr)
	}
}

// TestVerifyDamaged: a shape whose consumer record is gone (a damaged
// invariant) makes verify exit 1 and name it.
func TestVerifyDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledgerd.db")
	buildLedger(t, path)
	db := must(bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second}))
	check(t, db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("consumers")).Delete([]byte("batch"))
	}))
	check(t, db.Close())
	for _, args := range [][]string{{"verify"}, {"-json", "verify"}} {
		r := runInspect(t, nil, append([]string{"-db", path}, args...)...)
		if r.code != exitProblem {
			t.Fatalf("%v: exit %d, want 1; stderr %s", args, r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "shape_owner") || !strings.Contains(r.stdout, "orders-all") {
			t.Errorf("%v: output does not name the violation:\n%s", args, r.stdout)
		}
	}
}
