package cork_test

import (
	"bytes"
	"net"
	"sync"
	"testing"

	"github.com/ledgerd/ledgerd/internal/cork"
)

// recorder is a net.Conn that records each Write.
type recorder struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func TestCorkHoldsWritesUntilUncork(t *testing.T) {
	rec := &recorder{}
	c := cork.Wrap(rec)
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	c.Cork()
	for _, s := range []string{"b", "cc", "ddd"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.writes) != 1 {
		t.Fatalf("%d writes reached the connection while corked, want only the one before", len(rec.writes))
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 2 || string(rec.writes[1]) != "bccddd" {
		t.Fatalf("writes %q, want [a bccddd]", rec.writes)
	}
	if _, err := c.Write([]byte("e")); err != nil {
		t.Fatal(err)
	}
	if err := c.Uncork(); err != nil { // nothing held: no write
		t.Fatal(err)
	}
	if len(rec.writes) != 3 || string(rec.writes[2]) != "e" {
		t.Fatalf("writes %q, want [a bccddd e]", rec.writes)
	}
}

// TestCorkPassesLargeWrites: a write that would take what is held past
// MaxHold goes through after it, not copied.
func TestCorkPassesLargeWrites(t *testing.T) {
	rec := &recorder{}
	c := cork.Wrap(rec)
	c.Cork()
	big := bytes.Repeat([]byte("x"), cork.MaxHold)
	for _, p := range [][]byte{[]byte("head"), big, []byte("tail")} {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	want := []string{"head", string(big), "tail"}
	if len(rec.writes) != len(want) {
		t.Fatalf("%d writes, want %d", len(rec.writes), len(want))
	}
	for i, w := range want {
		if string(rec.writes[i]) != w {
			t.Errorf("write %d is %d bytes, want %d", i, len(rec.writes[i]), len(w))
		}
	}
}
