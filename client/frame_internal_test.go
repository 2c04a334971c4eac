package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

// daemonFrames are frames as the daemon writes them (deliver's encoder).
var daemonFrames = []string{
	`{"type":"txn","lsn":"0/1A2B3C8","end_lsn":"0/1A2B3F8","xid":741,"commit_time":"2026-11-29T06:00:00.123456Z","changes":[{"shapes":["s0000"],"op":"insert","table":"public.bench0","new":{"id":"1","tenant":"0","v":"value 1"}}]}` + "\n",
	`{"type":"txn","lsn":"0/100","xid":4294967295,"commit_time":"2026-11-29T06:00:00Z","part":1,"changes":[{"shapes":["a","b"],"op":"update","table":"public.t","new":{"id":"2","v":null},"old":{"id":"1"}}]}` + "\n",
	`{"type":"txn","lsn":"0/100","end_lsn":"0/130","xid":7,"commit_time":"2026-11-29T06:00:00Z","part":2,"last":true,"changes":[{"shapes":["a"],"op":"delete","table":"public.t","old":{"id":"1"}},{"shapes":["b"],"op":"truncate","table":"public.t"}]}` + "\n",
	`{"type":"txn","lsn":"0/200","end_lsn":"0/230","xid":0,"commit_time":"2026-11-29T06:00:00Z","changes":[]}` + "\n",
	`{"type":"txn","lsn":"0/300","end_lsn":"0/330","xid":8,"commit_time":"2026-11-29T06:00:00Z","changes":[{"shapes":["é"],"op":"insert","table":"public.ü","new":{"ключ":"значение 😀","e":""}}]}` + "\n",
	`{"type":"challenge","shape":"s1"}` + "\n",
	`{"type":"evicted","shape":"s1","reason":"stalled"}` + "\n",
	`{"type":"keepalive"}` + "\n",
}

// otherFrames are left to encoding/json, or are not frames at all.
var otherFrames = []string{
	`{"type":"txn","lsn":"0/100","changes":[{"shapes":["a"],"op":"insert","table":"public.t","new":{"v":"a\"b\\c\n\u00e9\ud83d\ude00"}}]}`,
	`{"Type":"keepalive"}`,
	`{"type":"keepalive","future":{"x":[1,2,{"y":null}]}}`,
	`{"type":"txn","xid":1e3}`,
	`{"type":"txn","xid":-1}`,
	`{"type":"txn","xid":4294967296}`,
	`{"type":"txn","xid":01}`,
	`{"type":"txn","part":1.0}`,
	`{"type":"txn","last":null,"commit_time":null,"changes":null}`,
	`{"type":"txn","commit_time":"yesterday"}`,
	`{"type":"txn","changes":[{"shapes":["a"],"op":"insert","table":"t","new":{"a":"1"}}],"changes":[{"op":"delete"}]}`,
	`{"type":"txn","changes":[{"shapes":["a"],"op":"insert","shapes":["b"]}]}`,
	`{"type":"txn","changes":[{"new":{"a":"1","a":null}}]}`,
	`{"type":"txn","changes":[{"new":{"a":1}}]}`,
	"{\"type\":\"t\xffx\"}",
	"{\"type\":\"a\tb\"}",
	` { "type" : "keepalive" , "shape" : "x" } `,
	`{"type":"keepalive"} {"type":"keepalive"}`,
	`{"type":"keepalive"`,
	`{"type":"keepalive",}`,
	`{"type"}`,
	`[]`,
	`null`,
	``,
}

// TestFrameDecodingMatchesEncodingJSON: the hand decoder gives what
// encoding/json gives, for the daemon's frames and for anything else, and
// takes the daemon's frames without encoding/json.
func TestFrameDecodingMatchesEncodingJSON(t *testing.T) {
	for _, line := range append(append([]string{}, daemonFrames...), otherFrames...) {
		checkFrame(t, line)
	}
	for _, line := range daemonFrames {
		var f wire.Frame
		if !parseFrame([]byte(line), &f) {
			t.Errorf("the daemon's frame %s is left to encoding/json", line)
		}
	}
}

func checkFrame(t *testing.T, line string) {
	t.Helper()
	var want, got wire.Frame
	wantErr := json.Unmarshal([]byte(line), &want)
	gotErr := decodeFrame([]byte(line), &got)
	if (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error() {
		t.Fatalf("%q: error %v, encoding/json %v", line, gotErr, wantErr)
	}
	if wantErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %+v\nwant %+v", line, got, want)
	}
}

func FuzzFrameDecoding(f *testing.F) {
	for _, line := range append(append([]string{}, daemonFrames...), otherFrames...) {
		f.Add(line)
	}
	f.Fuzz(checkFrame)
}

// TestStreamNextAllocations: reading a single-row transaction from the
// stream allocates little beyond what the Txn holds.
func TestStreamNextAllocations(t *testing.T) {
	const frames = 2000
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat(daemonFrames[0], frames))
	}))
	defer srv.Close()
	c, err := New(Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	k := &Consumer{c: c, id: "c", lease: "l"}
	s, err := k.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	allocs := testing.AllocsPerRun(frames-10, func() {
		if _, txn, err := s.Next(); err != nil || txn == nil {
			t.Fatalf("Next: %v %v", txn, err)
		}
	})
	// The Txn, its line as a string, its changes, shapes, row map (and its
	// table): 6, and one to spare. The frame itself, its commit time and
	// its row's values come from the stream's scratch space and arena.
	t.Logf("%.1f allocations a frame", allocs)
	if allocs > 7 {
		t.Errorf("%.1f allocations a frame, want at most 7", allocs)
	}
}

// TestStreamNextFramesKeepTheirValues: frames whose values and commit
// times share the stream's arena, and a large frame that does not, each
// keep their own, however many frames are read after them.
func TestStreamNextFramesKeepTheirValues(t *testing.T) {
	frame := func(i int, v string) string {
		return fmt.Sprintf(`{"type":"txn","lsn":"0/%X","end_lsn":"0/%X","xid":%d,"commit_time":"2026-11-29T06:00:%02dZ","changes":[{"shapes":["s"],"op":"insert","table":"public.t","new":{"id":"%d","v":"%s"}}]}`+"\n", i+1, i+1, i+1, i%60, i, v)
	}
	const n = 100
	var body strings.Builder
	for i := range n {
		v := "x"
		if i == n/2 {
			v = strings.Repeat("y", arenaShareBytes)
		}
		body.WriteString(frame(i, v))
	}
	s := &Stream{body: io.NopCloser(strings.NewReader(body.String())), r: bufio.NewReaderSize(strings.NewReader(body.String()), streamBuffer)}
	var txns []*Txn
	for range n {
		_, txn, err := s.Next()
		if err != nil || txn == nil {
			t.Fatalf("Next: %v %v", txn, err)
		}
		txns = append(txns, txn)
	}
	for i, txn := range txns {
		row := txn.Changes[0].New
		if got := *row["id"]; got != strconv.Itoa(i) {
			t.Errorf("frame %d: id %s", i, got)
		}
		if want := (i == n/2); (len(*row["v"]) == arenaShareBytes) != want {
			t.Errorf("frame %d: v of %d bytes", i, len(*row["v"]))
		}
		if got := txn.CommitTime.Second(); got != i%60 {
			t.Errorf("frame %d: commit time %v", i, txn.CommitTime)
		}
	}
}

// TestFramesReadTogetherAreHandled: frames that arrive in one read, the
// last of them not a transaction, are all handed to the handler while the
// reader waits for more (it wakes the handler once for all of them).
func TestFramesReadTogetherAreHandled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		pr, pw := io.Pipe()
		s := &Stream{body: pr, r: bufio.NewReaderSize(pr, streamBuffer)}
		a := &acker{wake: make(chan struct{}, 1), pending: map[string]ledger.LSN{}, handled: map[string]ledger.LSN{}}
		w := &work{wake: make(chan struct{}, 1), room: make(chan struct{}, 1), max: DefaultMaxQueueBytes}
		var handled []string
		go func() {
			_ = w.handle(ctx, func(_ context.Context, t *Txn) error {
				handled = append(handled, t.LSN.String())
				return nil
			}, a)
		}()
		go func() { _ = (&Consumer{}).readStream(ctx, s, w, RunOptions{IdleTimeout: time.Hour}, a) }()
		frame := func(lsn string) string {
			return `{"type":"txn","lsn":"` + lsn + `","end_lsn":"` + lsn + `","xid":1,"commit_time":"2026-11-29T06:00:00Z","changes":[{"shapes":["s"],"op":"insert","table":"public.t","new":{"id":"1"}}]}` + "\n"
		}
		go func() {
			_, _ = io.WriteString(pw, frame("0/100")+frame("0/200")+frame("0/300")+`{"type":"keepalive"}`+"\n")
		}()
		synctest.Wait()
		if want := []string{"0/100", "0/200", "0/300"}; !slices.Equal(handled, want) {
			t.Errorf("handled %v while the reader waits, want %v", handled, want)
		}
		cancel()
		pw.Close()
	})
}

// BenchmarkStreamNext reads single-row txn frames, as the daemon writes
// them, from an HTTP change stream.
func BenchmarkStreamNext(b *testing.B) {
	frames := 1 << 20 / len(daemonFrames[0])
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for r.Context().Err() == nil {
			if _, err := io.WriteString(w, strings.Repeat(daemonFrames[0], frames)); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	c, err := New(Config{URL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	s, err := (&Consumer{c: c, id: "c", lease: "l"}).OpenStream(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, txn, err := s.Next(); err != nil || txn == nil {
			b.Fatalf("Next: %v %v", txn, err)
		}
	}
}

// TestTxnShapes: each shape once, in the order they first appear, however
// many there are.
func TestTxnShapes(t *testing.T) {
	var changes []wire.Change
	var want []string
	for i := range 20 {
		s := string(rune('a' + i))
		changes = append(changes, wire.Change{Shapes: []string{s, "a", s}})
		want = append(want, s)
	}
	if got := (&Txn{Changes: changes}).Shapes(); !slices.Equal(got, want) {
		t.Errorf("Shapes() = %v, want %v", got, want)
	}
	if got := (&Txn{Changes: changes[:3]}).Shapes(); !slices.Equal(got, want[:3]) {
		t.Errorf("Shapes() = %v, want %v", got, want[:3])
	}
}

// TestStreamBatchIsReadInOneRead: the daemon writes a batch of frames as
// one HTTP chunk, often tens of KiB. A Client made without an HTTPClient
// reads such a chunk, its header and the next one's with one read of the
// connection, not one for the header and first 4 KiB and more for the
// rest; and its connections are not the net package's (their reads and
// writes are raw system calls, internal/rawsock).
func TestStreamBatchIsReadInOneRead(t *testing.T) {
	const batches = 20
	batch := strings.Repeat(daemonFrames[0], 48<<10/len(daemonFrames[0]))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	release := make(chan struct{})
	go func() {
		// A daemon's change stream: the answer's header, then each batch
		// as one chunk in one write.
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
			t.Error(err)
			return
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
		for range batches {
			<-release
			_, _ = fmt.Fprintf(conn, "%x\r\n%s\r\n", len(batch), batch)
		}
	}()
	c, err := New(Config{URL: "http://" + ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	tr := c.hc.Transport.(*http.Transport)
	var conns []*countingConn
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if _, ok := nc.(*net.TCPConn); ok {
			t.Errorf("the client's connections read through the net package")
		}
		cc := &countingConn{Conn: nc}
		conns = append(conns, cc)
		return cc, nil
	}
	k := &Consumer{c: c, id: "c", lease: "l"}
	s, err := k.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	perBatch := strings.Count(batch, "\n")
	for range batches {
		release <- struct{}{}
		for range perBatch {
			if _, _, err := s.Next(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(conns) != 1 {
		t.Fatalf("%d connections, want 1", len(conns))
	}
	reads := conns[0].reads.Load()
	t.Logf("%d reads for %d batches of %d bytes", reads, batches, len(batch))
	// The answer's header, then a batch a read; a batch split by the
	// network may take one more now and then.
	if reads > 3*batches/2+1 {
		t.Errorf("%d reads for %d batches, want about one a batch", reads, batches)
	}
}

type countingConn struct {
	net.Conn
	reads atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}
