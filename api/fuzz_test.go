package api_test

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
)

// fuzzCalls are the calls whose JSON bodies FuzzRequestBodies sends; c is a
// registered consumer (its lease is sent), s its shape.
var fuzzCalls = []struct{ method, path string }{
	{"POST", "/v1/consumers"},
	{"POST", "/v1/consumers/c/heartbeat"},
	{"PUT", "/v1/shapes/s2"},
	{"PUT", "/v1/consumers/c/shapes"},
	{"POST", "/v1/consumers/c/ack"},
	{"POST", "/v1/shapes/s/evict"},
}

// FuzzRequestBodies sends arbitrary bodies to every call that takes one: no
// body may crash the daemon or earn a 5xx (bad input is a 4xx with an error
// object), a lease is granted for exactly the TTL asked, and the ledger file
// verifies clean afterwards.
func FuzzRequestBodies(f *testing.F) {
	seeds := []string{
		`{"id":"x","ttl_ms":1000}`,
		`{"id":"x","ttl_ms":9223372036854775807}`,
		`{"id":"x","ttl_ms":-9223372036854775808}`,
		`{"id":"x","ttl_ms":9223372036854}`,
		`{"id":"x","ttl_ms":9223372036855}`,
		`{"id":"x","ttl_ms":18446744073709551616}`,
		`{"id":"x","ttl_ms":1e308,"pid":-1}`,
		`{"id":"x","pid":9223372036854775807,"host":"h","proc_start":"1"}`,
		`{"shapes":["s","s2",""]}`,
		`{"consumer":"c","table":"public.orders","filter":{"tenant":["a","b"]}}`,
		`{"consumer":"c","table":"orders","filter":{"":["x"]}}`,
		`{"shapes":[{"id":"s3","table":"public.items"},{"id":"s3","table":"public.items","filter":{"a":[]}}]}`,
		`{"acks":{"s":"0/64"}}`,
		`{"acks":{"s":"FFFFFFFF/FFFFFFFF","nope":"0/1"}}`,
		`{"lsn":"0/64"}`,
		`{"lsn":"FFFFFFFF/FFFFFFFF"}`,
		`{"lsn":"0/0"}`,
		`{"defer":["s"]}`,
		`{"acks":{},"lsn":"0/1"}`,
		`{"dry_run":true}`,
		`{"reason":"released","dry_run":true}`,
		``, `null`, `[]`, `{}`, `{"id":"x"} {}`, `{"unknown":1}`,
	}
	for i, s := range seeds {
		f.Add(uint8(i%len(fuzzCalls)), []byte(s))
		f.Add(uint8(i*7%len(fuzzCalls)), []byte(s))
	}
	path := f.TempDir() + "/ledger.db"
	l, err := ledger.Open(ledger.Config{Path: path, Identity: ledger.Identity{SystemID: "1", Slot: "ledgerd"}, Logger: zerolog.Nop()})
	if err != nil {
		f.Fatal(err)
	}
	hub := deliver.New(deliver.Config{Ledger: l, KeepaliveInterval: time.Hour, Logger: zerolog.Nop()})
	h := api.New(api.Config{Ledger: l, Hub: hub, Tables: tables{"public.orders": true, "public.items": true},
		SlotName: "ledgerd", Logger: zerolog.Nop()}).Handler()
	f.Cleanup(func() {
		hub.Close()
		if err := l.Close(); err != nil {
			f.Errorf("closing the ledger: %v", err)
		}
		if problems, err := ledger.Verify(path); err != nil || len(problems) > 0 {
			f.Errorf("ledger verify after fuzzing: %v %v", problems, err)
		}
	})
	c, err := l.Register(ledger.ConsumerSpec{ID: "c", TTL: 24 * time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	var lsn ledger.LSN = 100
	f.Fuzz(func(t *testing.T, call uint8, body []byte) {
		// Keep the scene: s exists (an eviction ends it) with a transaction
		// to ack.
		if _, ok := l.Shape("s"); !ok {
			if _, _, err := hub.CreateShape(ledger.ShapeSpec{ID: "s", Consumer: "c", Table: "public.orders"}); err != nil {
				t.Skipf("the scene cannot be rebuilt: %v", err)
			}
		}
		lsn += 16
		l.Track(lsn, lsn+8, []string{"s"})
		cl := fuzzCalls[int(call)%len(fuzzCalls)]
		req := httptest.NewRequest(cl.method, cl.path, strings.NewReader(string(body)))
		req.Header.Set(wire.HeaderLease, c.Lease)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", cl.method, cl.path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var we wire.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &we); err != nil || we.Code == "" || we.Message == "" {
				t.Fatalf("%s %s %q: %d answer is not an error object: %s", cl.method, cl.path, body, rec.Code, rec.Body)
			}
			return
		}
		if cl.path == "/v1/consumers" && rec.Code == http.StatusCreated {
			var in wire.RegisterRequest
			var out wire.RegisterResponse
			_ = json.Unmarshal(body, &in)
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
			if in.TTLMS != 0 && out.TTLMS != in.TTLMS || out.TTLMS <= 0 || out.TTLMS > math.MaxInt32*1000 {
				t.Fatalf("asked for a lease of %d ms, granted %d ms", in.TTLMS, out.TTLMS)
			}
		}
	})
}
