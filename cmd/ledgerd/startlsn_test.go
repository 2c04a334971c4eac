package main_test

import (
	"bytes"
	"context"
	be "encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/client"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// replGate is a TCP proxy in front of Postgres that lets the first pass
// replication connections through (those whose startup message asks for
// replication) and holds later ones until open is called. Other connections
// always go through.
type replGate struct {
	t      testing.TB
	ln     net.Listener
	target string
	pass   int

	mu     sync.Mutex
	seen   int
	opened chan struct{}
	once   sync.Once
}

func newReplGate(t testing.TB, target string, pass int) *replGate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &replGate{t: t, ln: ln, target: target, pass: pass, opened: make(chan struct{})}
	t.Cleanup(func() { g.open(); ln.Close() })
	go g.serve()
	return g
}

// port is the port the gate listens on.
func (g *replGate) port() int { return g.ln.Addr().(*net.TCPAddr).Port }

// open lets held and later replication connections through.
func (g *replGate) open() { g.once.Do(func() { close(g.opened) }) }

// held reports how many replication connections arrived past the first pass.
func (g *replGate) held() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(g.seen-g.pass, 0)
}

func (g *replGate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		go g.handle(c)
	}
}

func (g *replGate) handle(c net.Conn) {
	defer c.Close()
	// The startup message: length, protocol version, then name/value pairs
	// (the connection string says sslmode=disable, so it comes first).
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	n := be.BigEndian.Uint32(hdr[:])
	if n < 8 || n > 1<<16 {
		return
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(c, body); err != nil {
		return
	}
	if bytes.Contains(body, []byte("\x00replication\x00database\x00")) {
		g.mu.Lock()
		g.seen++
		hold := g.seen > g.pass
		g.mu.Unlock()
		if hold {
			<-g.opened
		}
	}
	up, err := net.Dial("tcp", g.target)
	if err != nil {
		return
	}
	defer up.Close()
	if _, err := up.Write(append(hdr[:], body...)); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

// TestShapeBeforeFirstTransactionStartsAtSlot: on a new ledger file, a shape
// created before the stream has handed over anything starts at the slot's
// confirmed position, not at 0/0; it then receives every transaction after
// that position and none before it.
func TestShapeBeforeFirstTransactionStartsAtSlot(t *testing.T) {
	dsn := pgtest.NewDB(t, cluster)
	slot := slotName(t)
	sql(t, dsn, "CREATE TABLE items (id text PRIMARY KEY, v text)",
		"INSERT INTO items VALUES ('before-slot', 'x')",
		"CREATE PUBLICATION "+slot+" FOR ALL TABLES",
		"SELECT pg_create_logical_replication_slot('"+slot+"', 'pgoutput')")
	confirmed := confirmedFlush(t, dsn, slot)
	if confirmed == 0 {
		t.Fatal("a new slot has no confirmed position")
	}
	// A backlog the stream has not read when the shape is created.
	sql(t, dsn, "INSERT INTO items VALUES ('backlog-1', 'x')", "INSERT INTO items VALUES ('backlog-2', 'x')")

	// The daemon's preflight goes through; its stream is held back, so the
	// shape is created before the stream hands over its first transaction.
	gate := newReplGate(t, fmt.Sprintf("127.0.0.1:%d", cluster.Port()), 1)
	gated := strings.Replace(dsn, fmt.Sprintf(":%d/", cluster.Port()), fmt.Sprintf(":%d/", gate.port()), 1)
	// The slot was made by hand for this new ledger file: adopting it costs
	// nothing, no consumer has used it.
	d := launchDaemon(t, freeAddr(t), gated, slot, "", "-adopt-slot")
	waitFor(t, "the API to answer", time.Minute, func() bool {
		status, err := d.c.Do(context.Background(), "GET", "/healthz", "", nil, nil)
		return err == nil && status == 200
	})
	waitFor(t, "the stream to connect", time.Minute, func() bool { return gate.held() > 0 })
	// The stream connects while the start fills the router, before the
	// API is served.
	waitFor(t, "the API to be served", time.Minute, func() bool { return strings.Contains(d.logText(), "ledgerd serving") })

	ctx := context.Background()
	k, err := d.c.Register(ctx, client.ConsumerConfig{ID: "k", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sh, err := k.PutShape(ctx, "s", "items", nil)
	if err != nil {
		t.Fatal(err)
	}
	start, err := ledger.ParseLSN(sh.StartLSN)
	if err != nil {
		t.Fatal(err)
	}
	if start+1 < confirmed {
		t.Fatalf("shape created before the first transaction starts at %s, below the slot's confirmed position %s", start, confirmed)
	}

	gate.open()
	d.waitReady()
	sql(t, dsn, "INSERT INTO items VALUES ('after', 'x')")
	rec := newRecorder()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- k.Run(runCtx, rec.handle, client.RunOptions{}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	}()
	waitFor(t, "the rows after the slot's position", time.Minute, func() bool { return rec.count("s") >= 3 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var ids []string
	for _, ev := range rec.events["s"] {
		ids = append(ids, ev.ID)
		if ev.LSN <= start {
			t.Errorf("shape starting at %s received %s at %s", start, ev.ID, ev.LSN)
		}
	}
	if got := strings.Join(ids, ","); got != "backlog-1,backlog-2,after" {
		t.Errorf("shape received %s, want backlog-1,backlog-2,after", got)
	}
}
