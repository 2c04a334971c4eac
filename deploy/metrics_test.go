package deploy_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// Every metric the alert rules and the dashboard name is exported by a
// running ledgerd after some traffic, so that no rule or panel watches a
// name that does not exist (and so never fires or stays empty). Series
// with labels that only appear after an event (evictions by reason, slot
// audit anomalies) are exported at zero from the start.
func TestMonitoredMetricsAreExported(t *testing.T) {
	names := monitoredMetrics(t)
	if len(names) < 10 {
		t.Fatalf("only %d metrics found in the rules and the dashboard: %v", len(names), names)
	}
	dsn := pgtest.NewDB(t, cluster)
	exec1(t, dsn, "CREATE TABLE orders (id int PRIMARY KEY, tenant text)")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(binary, "-slot", "deploy_metrics", "-publication", "deploy_metrics", "-create-slot", "-create-publication", "all",
		"-db", filepath.Join(dir, "ledgerd.db"), "-listen", addr, "-status-interval", "200ms", "-reconcile-interval", "200ms",
		"-heartbeat-interval", "0")
	cmd.Env = append(os.Environ(), "LEDGERD_PG_URL="+dsn, "LEDGERD_TOKEN_FILE="+tokenFile)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("ledgerd log:\n%s", log.String())
		}
	})
	url := "http://" + addr
	hc := &http.Client{Timeout: 10 * time.Second}
	waitUntil(t, "ledgerd ready", func() bool {
		resp, err := hc.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.New(client.Config{URL: url, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.Register(ctx, client.ConsumerConfig{ID: "app", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.PutShape(ctx, "orders-a", "public.orders", map[string][]string{"tenant": {"a"}}); err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() {
		runDone <- k.Run(runCtx, func(context.Context, *client.Txn) error { got.Add(1); return nil }, client.RunOptions{})
	}()
	for i := range 5 {
		exec1(t, dsn, "INSERT INTO orders VALUES ($1, 'a')", i)
	}
	waitUntil(t, "5 transactions consumed", func() bool { return got.Load() >= 5 })
	stopRun()
	<-runDone

	req, _ := http.NewRequest("GET", url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer tok")
	var body string
	waitUntil(t, "acks in /metrics", func() bool {
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200 && !strings.Contains(body, "\nledgerd_acks_total 0\n") && strings.Contains(body, "\nledgerd_slot_audit_wal_status{")
	})
	exported := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		exported[name] = true
	}
	for _, n := range names {
		if !exported[n] {
			t.Errorf("%s is named by the alert rules or the dashboard but not exported by ledgerd", n)
		}
	}
}

func exec1(t *testing.T, dsn, q string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// waitUntil polls cond; the 60s deadline only bounds a broken run.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 60s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
