package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestShellConsumer runs docs/examples/consumer.sh, the consumer docs/api.md
// shows, against the real daemon: it must receive its shape's rows and no
// others, ack them (the shape's flushed position reaches the last one),
// create its shape again after an eviction, and release its consumer on
// SIGTERM. Its calls go through a proxy that checks them against
// api/openapi.yaml, like every other call of these tests.
func TestShellConsumer(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("docs/examples/consumer.sh needs %s: install it (.ci/run installs jq from Debian's packages): %v", tool, err)
		}
	}
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE orders (id int PRIMARY KEY, tenant text NOT NULL, note text)")
	adminFile := filepath.Join(t.TempDir(), "admin")
	if err := os.WriteFile(adminFile, []byte("adm1n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dsn, slot, "", "-admin-token-file", adminFile)

	target, _ := url.Parse(d.url)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = d.api.transport(baseTransport(d.addr))
	proxy.FlushInterval = -1 // the change stream goes through as it is written
	front := httptest.NewServer(proxy)
	defer front.Close()

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "../../docs/examples/consumer.sh")
	cmd.Env = append(os.Environ(), "LEDGERD_URL="+front.URL, "LEDGERD_TOKEN_FILE="+tokenFile, "LEDGERD_TOKEN=",
		"TABLE=public.orders", `FILTER={"tenant":["a"]}`, "CONSUMER_ID=sh", "SHAPE_ID=orders-a", "TTL_MS=30000")
	stderr := &lockedWriter{b: &bytes.Buffer{}}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			stderr.mu.Lock()
			t.Logf("consumer.sh stderr:\n%s", stderr.b.String())
			stderr.mu.Unlock()
		}
	})

	type change struct {
		LSN   string             `json:"lsn"`
		Op    string             `json:"op"`
		Table string             `json:"table"`
		New   map[string]*string `json:"new"`
	}
	var (
		mu  sync.Mutex
		got []change
	)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var c change
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				t.Errorf("consumer.sh printed %q: %v", sc.Text(), err)
				continue
			}
			mu.Lock()
			got = append(got, c)
			mu.Unlock()
		}
		exited <- cmd.Wait()
	}()
	ids := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, c := range got {
			out = append(out, *c.New["tenant"]+*c.New["id"])
		}
		return out
	}
	shape := func() wire.Shape {
		var sh wire.Shape
		if _, err := d.c.Do(context.Background(), "GET", "/v1/shapes/orders-a", "", nil, &sh); err != nil {
			t.Fatal(err)
		}
		return sh
	}
	waitFor(t, "consumer.sh to create its shape", 30*time.Second, func() bool {
		_, err := d.c.Do(context.Background(), "GET", "/v1/shapes/orders-a", "", nil, nil)
		return err == nil
	})

	sql(t, dsn, "INSERT INTO orders VALUES (1, 'a', 'x')", "INSERT INTO orders VALUES (2, 'b', 'x')",
		"INSERT INTO orders VALUES (3, 'a', NULL)")
	waitFor(t, "consumer.sh to print the rows of tenant a", 30*time.Second, func() bool { return len(ids()) >= 2 })
	if g := strings.Join(ids(), ","); g != "a1,a3" {
		t.Fatalf("consumer.sh received %s, want a1,a3", g)
	}
	mu.Lock()
	last := got[len(got)-1]
	mu.Unlock()
	if last.Op != "insert" || last.Table != "public.orders" || last.New["note"] != nil {
		t.Errorf("last change %+v: want an insert into public.orders with note null", last)
	}
	lastLSN, err := ledger.ParseLSN(last.LSN)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the shape's flushed position to reach the last transaction (the ack)", 30*time.Second, func() bool {
		f, _ := ledger.ParseLSN(shape().FlushedLSN)
		return f >= lastLSN
	})

	// An operator evicts the shape: the script gets the evicted frame and
	// creates it again.
	req, _ := http.NewRequest("POST", d.url+"/v1/shapes/orders-a/evict", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer adm1n")
	if _, err := d.httpDo(req); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "consumer.sh to create its evicted shape again", 30*time.Second, func() bool {
		var sh wire.Shape
		_, err := d.c.Do(context.Background(), "GET", "/v1/shapes/orders-a", "", nil, &sh)
		return err == nil && sh.Generation == 2
	})
	sql(t, dsn, "INSERT INTO orders VALUES (4, 'a', 'y')")
	waitFor(t, "consumer.sh to print the row after the eviction", 30*time.Second, func() bool { return len(ids()) >= 3 })
	if g := strings.Join(ids(), ","); g != "a1,a3,a4" {
		t.Fatalf("consumer.sh received %s, want a1,a3,a4", g)
	}

	// A transaction larger than -fragment-bytes (4 MiB by default) comes in
	// parts; the script applies it once, whole, after its last part.
	sql(t, dsn, "INSERT INTO orders SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, repeat(md5(g::text), 80) FROM generate_series(10, 4009) g")
	waitFor(t, "consumer.sh to print the large transaction", 60*time.Second, func() bool { return len(ids()) >= 3+2000 })
	rows := ids()
	seen := map[string]bool{}
	for _, id := range rows[3:] {
		if seen[id] || id[0] != 'a' {
			t.Fatalf("consumer.sh printed %s twice, or a row of another tenant, in the large transaction", id)
		}
		seen[id] = true
	}
	mu.Lock()
	bigLSN, err := ledger.ParseLSN(got[len(got)-1].LSN)
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the shape's flushed position to reach the large transaction", 30*time.Second, func() bool {
		f, _ := ledger.ParseLSN(shape().FlushedLSN)
		return f >= bigLSN
	})

	// SIGTERM: the script releases its consumer and exits 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("consumer.sh exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("consumer.sh did not exit within 30s of SIGTERM")
	}
	var c wire.Consumer
	if _, err := d.c.Do(context.Background(), "GET", "/v1/consumers/sh", "", nil, &c); err != nil {
		t.Fatal(err)
	}
	if !c.Gone || c.GoneReason != string(ledger.ReasonReleased) {
		t.Errorf("after SIGTERM the consumer is %+v, want gone as released", c)
	}
	d.api.mu.Lock()
	calls := d.api.calls
	d.api.mu.Unlock()
	if calls < 8 {
		t.Errorf("the proxy checked %d calls; consumer.sh does not go through it", calls)
	}
}
