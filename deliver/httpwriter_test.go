package deliver_test

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/internal/cork"
)

// countingListener counts the writes to the connections it accepts.
type countingListener struct {
	net.Listener
	mu     sync.Mutex
	writes int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, l: l}, nil
}

func (l *countingListener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writes
}

type countingConn struct {
	net.Conn
	l *countingListener
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.l.mu.Lock()
	c.l.writes++
	c.l.mu.Unlock()
	return c.Conn.Write(p)
}

// TestHTTPWriterOneWritePerBatch: a batch of frames larger than net/http's
// 4 KiB buffer, written and flushed through NewHTTPWriter on a server set
// up as ledgerd's is (cork.Listener, cork.ConnContext), reaches the socket
// in one write, not three.
func TestHTTPWriterOneWritePerBatch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingListener{Listener: ln}
	batch := bytes.Repeat([]byte(`{"frame":"0123456789abcdef0123456789abcdef0123456789abcdef"}`+"\n"), 300) // 18 KiB
	counts := make(chan [2]int, 1)
	srv := &http.Server{ConnContext: cork.ConnContext, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fw := deliver.NewHTTPWriter(w, r)
		if err := fw.Flush(); err != nil { // headers
			t.Error(err)
		}
		before := counting.count()
		if _, err := fw.Write(batch); err != nil {
			t.Error(err)
		}
		if err := fw.Flush(); err != nil {
			t.Error(err)
		}
		counts <- [2]int{before, counting.count()}
	})}
	go func() { _ = srv.Serve(cork.Listener{Listener: counting}) }()
	defer srv.Close()

	resp, err := http.Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	c := <-counts
	if got := c[1] - c[0]; got != 1 {
		t.Errorf("a %d-byte batch took %d writes to the socket, want 1", len(batch), got)
	}
	// And it arrives whole.
	r := bufio.NewReader(resp.Body)
	var got []byte
	for len(got) < len(batch) {
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, line...)
	}
	if !bytes.Equal(got, batch) {
		t.Error("the batch arrived changed")
	}
}
