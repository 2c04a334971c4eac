package api_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestRandomInput sends mangled versions of valid bodies to every call. No
// answer may be a 5xx, and afterwards the ledger verifies clean (checked in
// newEnv's cleanup) and the daemon still streams and acks.
func TestRandomInput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k := e.register("c1")
	if _, err := k.PutShape(ctx, "s1", "public.orders", nil); err != nil {
		t.Fatal(err)
	}
	calls := []struct{ method, path, body string }{
		{"POST", "/v1/consumers", `{"id":"r1","ttl_ms":1000,"pid":12,"host":"h"}`},
		{"POST", "/v1/consumers/c1/heartbeat", `{"shapes":["s1"]}`},
		{"PUT", "/v1/shapes/s2", `{"consumer":"c1","table":"public.items","filter":{"k":["a","b"]}}`},
		{"POST", "/v1/consumers/c1/ack", `{"acks":{"s1":"0/0"}}`},
		{"POST", "/v1/consumers/c1/ack", `{"lsn":"0/0"}`},
		{"POST", "/v1/consumers/c1/ack", `{"defer":["s1"]}`},
		{"POST", "/v1/shapes/s9/evict", `{"reason":"manual","dry_run":true}`},
		{"GET", "/v1/events?since=1&limit=5", ``},
	}
	junk := []string{"", "\x00", "{", "}", "[", "]", `"`, ",", ":", "null", "-1", "1e999", "\xff", `\u0000`, "true", strings.Repeat("9", 40)}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 1500 {
		c := calls[rng.IntN(len(calls))]
		b := []byte(c.body)
		for range 1 + rng.IntN(3) {
			if len(b) == 0 {
				b = []byte(junk[rng.IntN(len(junk))])
				continue
			}
			p := rng.IntN(len(b))
			switch rng.IntN(3) {
			case 0: // delete a byte
				b = append(b[:p:p], b[p+1:]...)
			case 1: // insert junk
				j := junk[rng.IntN(len(junk))]
				b = append(b[:p:p], append([]byte(j), b[p:]...)...)
			default: // flip a byte
				b[p] ^= byte(1 + rng.IntN(255))
			}
		}
		status, we := e.raw(c.method, c.path, k.Lease(), "Bearer "+token, string(b))
		if status >= 500 {
			t.Fatalf("request %d %s %s %q: %d %+v", i, c.method, c.path, b, status, we)
		}
	}
	// Still streams and acks.
	s, err := k.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e.feed(0x1000, ins("public.orders", "id", "1"))
	txn := nextTxn(t, s)
	if _, err := k.Ack(ctx, map[string]ledger.LSN{"s1": txn.LSN}); err != nil {
		t.Fatal(err)
	}
}
