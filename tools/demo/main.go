// Command demo tells the whole ledgerd story on a throw-away local Postgres:
// two consumers stream, one dies, the slot is pinned, the reconciler evicts
// the orphan, the slot moves on, and `inspect why` explains every step.
//
// It is what `make demo` runs, after building bin/ledgerd, bin/inspect and
// bin/example:
//
//	go run ./tools/demo -bin bin
//
// The cluster, the ledger file and every process it starts are removed when
// it ends, also on Ctrl-C.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

func main() {
	bin := flag.String("bin", "bin", "`directory` holding the ledgerd, inspect and example binaries (make build)")
	ttl := flag.Duration("ttl", 3*time.Second, "consumer lease TTL used in the demo")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *bin, *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// demo holds what the story needs between steps.
type demo struct {
	out     io.Writer
	bin     string
	dir     string
	dsn     string
	api     string
	procs   []*exec.Cmd
	step    int
	started time.Time
}

func run(ctx context.Context, out io.Writer, bin string, ttl time.Duration) error {
	for _, name := range []string{"ledgerd", "inspect", "example"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return fmt.Errorf("%s not found in %s: run `make demo` (it builds them first)", name, bin)
		}
	}
	dir, err := os.MkdirTemp("", "ledgerd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	d := &demo{out: out, bin: bin, dir: dir, started: time.Now()}
	defer d.stopAll()

	d.say("starting a throw-away Postgres (wal_level=logical)")
	cluster, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		return err
	}
	defer cluster.Close()
	if err := cluster.CreateDatabase(ctx, "shop"); err != nil {
		return err
	}
	d.dsn = cluster.ConnString("shop")
	if err := d.exec(ctx, "CREATE TABLE orders (id serial PRIMARY KEY, tenant text NOT NULL, amount int NOT NULL)"); err != nil {
		return err
	}

	port, err := freePort()
	if err != nil {
		return err
	}
	d.api = fmt.Sprintf("http://127.0.0.1:%d", port)
	d.say("starting ledgerd: slot and publication created, leases of %s, reconcile every 500ms", ttl)
	err = d.start("ledgerd", filepath.Join(bin, "ledgerd"),
		"-pg-url", d.dsn, "-create-slot", "-create-publication", "all",
		"-db", filepath.Join(dir, "ledgerd.db"), "-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"-ttl", ttl.String(), "-reconcile-interval", "500ms", "-status-interval", "500ms",
		"-heartbeat-interval", "2s", "-log-level", "warn")
	if err != nil {
		return err
	}
	if err := d.waitFor(ctx, "ledgerd to be ready", 30*time.Second, d.ready); err != nil {
		return err
	}

	d.chapter("two consumers stream: alice follows tenant a, bob tenant b")
	for _, who := range []string{"alice", "bob"} {
		tenant := who[:1] // alice follows tenant a, bob tenant b
		err := d.start(who, filepath.Join(bin, "example"), "-url", d.api, "-id", who,
			"-shape", who+"-orders", "-table", "public.orders", "-filter", "tenant="+tenant, "-ttl", ttl.String())
		if err != nil {
			return err
		}
	}
	if err := d.waitFor(ctx, "both shapes to be registered", 30*time.Second, func(ctx context.Context) bool {
		return d.get(ctx, "/v1/shapes/alice-orders") && d.get(ctx, "/v1/shapes/bob-orders")
	}); err != nil {
		return err
	}
	if err := d.exec(ctx, "INSERT INTO orders (tenant, amount) SELECT t, g FROM generate_series(1, 5) g, unnest(ARRAY['a','b']) t"); err != nil {
		return err
	}
	if err := d.slotCaughtUp(ctx); err != nil {
		return err
	}
	d.inspect(ctx, "status")

	d.chapter("bob dies (SIGKILL): no release, no more heartbeats, its last transaction never acked")
	if err := d.kill("bob"); err != nil {
		return err
	}
	if err := d.exec(ctx, "INSERT INTO orders (tenant, amount) VALUES ('b', 100)"); err != nil {
		return err
	}
	if err := d.exec(ctx, "INSERT INTO orders (tenant, amount) SELECT 'a', g FROM generate_series(1, 200) g"); err != nil {
		return err
	}
	pinned := func(ctx context.Context) bool {
		cf, cur, err := d.slot(ctx)
		return err == nil && cf < cur
	}
	if err := d.waitFor(ctx, "the slot to show the pin", 10*time.Second, pinned); err != nil {
		return err
	}
	d.showSlot(ctx)
	d.say("alice keeps acking, yet the slot cannot move past bob's transaction:")
	d.inspect(ctx, "-pg", d.dsn, "why")
	d.inspect(ctx, "holders")

	d.chapter("the reconciler finds bob gone (its process, or at the latest its lease) and evicts its shape with a recorded reason")
	if err := d.waitFor(ctx, "the eviction", 4*ttl+10*time.Second, func(ctx context.Context) bool {
		var body bytes.Buffer
		return d.getBody(ctx, "/v1/evictions", &body) && strings.Contains(body.String(), "bob-orders")
	}); err != nil {
		return err
	}
	d.inspect(ctx, "evictions")

	d.chapter("the slot moves on")
	if err := d.slotCaughtUp(ctx); err != nil {
		return err
	}
	d.inspect(ctx, "-pg", d.dsn, "why")
	d.say("done in %s; cleaning up", time.Since(d.started).Round(100*time.Millisecond))
	return nil
}

func (d *demo) chapter(title string) {
	d.step++
	fmt.Fprintf(d.out, "\n== %d. %s\n", d.step, title)
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "-- "+format+"\n", args...)
}

// start runs a program in the background, its output going to a log file in
// the demo directory (shown if the demo fails).
func (d *demo) start(name, prog string, args ...string) error {
	logf, err := os.Create(filepath.Join(d.dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(prog, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); logf.Close() }()
	cmd.Args[0] = name
	d.procs = append(d.procs, cmd)
	return nil
}

func (d *demo) kill(name string) error {
	for _, p := range d.procs {
		if p.Args[0] == name {
			return p.Process.Kill()
		}
	}
	return fmt.Errorf("no process %s", name)
}

// stopAll ends the consumers and drains ledgerd with SIGTERM.
func (d *demo) stopAll() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && p.Process.Signal(syscall.Signal(0)) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		_ = p.Process.Kill()
	}
}

func (d *demo) inspect(ctx context.Context, args ...string) {
	full := append([]string{"-url", d.api}, args...)
	fmt.Fprintf(d.out, "\n$ inspect %s\n", strings.Join(redact(full, d.dsn), " "))
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "inspect"), full...)
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			fmt.Fprintln(d.out, "inspect:", err)
		}
	}
}

func redact(args []string, dsn string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == dsn {
			a = "$PG_URL"
		}
		out[i] = a
	}
	return out
}

func (d *demo) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, d.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// slot returns the slot's confirmed flush position and the server's WAL end.
func (d *demo) slot(ctx context.Context) (confirmed, current ledger.LSN, err error) {
	conn, err := pgx.Connect(ctx, d.dsn)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(ctx)
	var cf, cur string
	err = conn.QueryRow(ctx, `SELECT coalesce(confirmed_flush_lsn, '0/0')::text, pg_current_wal_lsn()::text
		FROM pg_replication_slots WHERE slot_name = 'ledgerd'`).Scan(&cf, &cur)
	if err != nil {
		return 0, 0, err
	}
	if confirmed, err = ledger.ParseLSN(cf); err != nil {
		return 0, 0, err
	}
	current, err = ledger.ParseLSN(cur)
	return confirmed, current, err
}

func (d *demo) showSlot(ctx context.Context) {
	cf, cur, err := d.slot(ctx)
	if err != nil {
		d.say("reading the slot: %v", err)
		return
	}
	d.say("slot ledgerd: confirmed_flush_lsn %s, WAL end %s, %d bytes retained behind the confirmed position", cf, cur, cur-cf)
}

// slotCaughtUp waits until the slot is confirmed at the WAL end as it was
// when called (nothing pending: the flush follows the WAL end, I3).
func (d *demo) slotCaughtUp(ctx context.Context) error {
	_, target, err := d.slot(ctx)
	if err != nil {
		return err
	}
	err = d.waitFor(ctx, "the slot to reach "+target.String(), 30*time.Second, func(ctx context.Context) bool {
		cf, _, err := d.slot(ctx)
		return err == nil && cf >= target
	})
	if err == nil {
		d.showSlot(ctx)
	}
	return err
}

func (d *demo) ready(ctx context.Context) bool { return d.get(ctx, "/readyz") }

func (d *demo) get(ctx context.Context, path string) bool {
	return d.getBody(ctx, path, io.Discard)
}

func (d *demo) getBody(ctx context.Context, path string, w io.Writer) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.api+path, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(w, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// waitFor polls cond until it holds; on time-out it shows the logs of the
// processes it started, which say why.
func (d *demo) waitFor(ctx context.Context, what string, limit time.Duration, cond func(context.Context) bool) error {
	deadline := time.Now().Add(limit)
	for {
		if cond(ctx) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			for _, p := range d.procs {
				if b, err := os.ReadFile(filepath.Join(d.dir, p.Args[0]+".log")); err == nil {
					fmt.Fprintf(os.Stderr, "--- %s log:\n%s\n", p.Args[0], tail(b, 40))
				}
			}
			return fmt.Errorf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(b []byte, lines int) string {
	s := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(s) > lines {
		s = s[len(s)-lines:]
	}
	return strings.Join(s, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
