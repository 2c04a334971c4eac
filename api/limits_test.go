package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

// call sends a call and returns the status, the error body (for 4xx and
// 5xx) and the answer's headers.
func (e *env) call(method, path, lease, body string) (int, wire.Error, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if lease != "" {
		req.Header.Set(wire.HeaderLease, lease)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var we wire.Error
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &we); err != nil || we.Code == "" || we.Message == "" {
			e.t.Errorf("%s %s: %d answer is not an error object: %q", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, we, resp.Header, b
}

func filterBody(columns, valuesEach, valueLen int) string {
	f := map[string][]string{}
	for c := range columns {
		var vals []string
		for v := range valuesEach {
			vals = append(vals, fmt.Sprintf("%0*d", valueLen, v))
		}
		f[fmt.Sprintf("c%d", c)] = vals
	}
	b, _ := json.Marshal(wire.ShapeRequest{Consumer: "c1", Table: "public.orders", Filter: f})
	return string(b)
}

// TestFilterLimits: a filter over a per-request limit is refused with 422
// and a code naming the limit, and creates nothing.
func TestFilterLimits(t *testing.T) {
	e := newEnvWith(t, func(c *api.Config) {
		c.Limits = api.Limits{MaxFilterColumns: 4, MaxFilterValues: 20, MaxValueBytes: 16}
	})
	lease := e.register("c1").Lease()
	longCol, _ := json.Marshal(wire.ShapeRequest{Consumer: "c1", Table: "public.orders",
		Filter: map[string][]string{strings.Repeat("k", 64): {"a"}}})
	tests := []struct {
		name, body string
		status     int
		code, hint string
	}{
		{"too many columns", filterBody(5, 1, 1), 422, wire.CodeFilterTooLarge, "-max-filter-columns"},
		{"10,000 one-value columns", filterBody(10000, 1, 1), 422, wire.CodeFilterTooLarge, "-max-filter-columns"},
		{"too many values", filterBody(3, 7, 2), 422, wire.CodeFilterTooLarge, "-max-filter-values"},
		{"value too long", filterBody(1, 1, 17), 422, wire.CodeValueTooLong, "-max-value-bytes"},
		{"column name longer than Postgres allows", string(longCol), 422, wire.CodeValueTooLong, "63"},
		{"at the limits", filterBody(4, 5, 16), 201, "", ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("s%d", i)
			status, we, _, _ := e.call("PUT", "/v1/shapes/"+id, lease, tc.body)
			if status != tc.status || we.Code != tc.code || !strings.Contains(we.Message, tc.hint) {
				t.Fatalf("got %d %q (%s), want %d %q naming %q", status, we.Code, we.Message, tc.status, tc.code, tc.hint)
			}
			if _, ok := e.l.Shape(id); ok != (status == 201) {
				t.Errorf("shape %s exists: %v after a %d answer", id, ok, status)
			}
		})
	}
}

// TestCountLimits: consumers holding a lease and shapes per consumer are
// capped with 429; the same shape put again is not a new one, and a
// released consumer frees its place.
func TestCountLimits(t *testing.T) {
	e := newEnvWith(t, func(c *api.Config) {
		c.Limits = api.Limits{MaxConsumers: 2, MaxShapesPerConsumer: 2}
	})
	ctx := context.Background()
	k := e.register("c1")
	e.register("c2")
	status, we, _, _ := e.call("POST", "/v1/consumers", "", `{"id":"c3"}`)
	if status != 429 || we.Code != wire.CodeTooManyConsumers || !strings.Contains(we.Message, "-max-consumers") {
		t.Fatalf("third consumer: %d %q (%s), want 429 %q naming -max-consumers", status, we.Code, we.Message, wire.CodeTooManyConsumers)
	}
	if _, ok := e.l.Consumer("c3"); ok {
		t.Fatal("a refused registration created consumer c3")
	}
	for _, id := range []string{"s1", "s2"} {
		if _, err := k.PutShape(ctx, id, "public.orders", nil); err != nil {
			t.Fatal(err)
		}
	}
	body := `{"consumer":"c1","table":"public.orders"}`
	if status, we, _, _ := e.call("PUT", "/v1/shapes/s1", k.Lease(), body); status != 200 {
		t.Fatalf("the same shape again: %d %q (%s), want 200", status, we.Code, we.Message)
	}
	status, we, _, _ = e.call("PUT", "/v1/shapes/s3", k.Lease(), body)
	if status != 429 || we.Code != wire.CodeTooManyShapes || !strings.Contains(we.Message, "-max-shapes-per-consumer") {
		t.Fatalf("third shape: %d %q (%s), want 429 %q naming -max-shapes-per-consumer", status, we.Code, we.Message, wire.CodeTooManyShapes)
	}
	if err := k.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if status, we, _, _ := e.call("POST", "/v1/consumers", "", `{"id":"c3"}`); status != 201 {
		t.Fatalf("a consumer after another was released: %d %q (%s), want 201", status, we.Code, we.Message)
	}
}

// TestTTLRange: ttl_ms outside 0..24h is 400 with the range, never a 500
// or a lease of some other length.
func TestTTLRange(t *testing.T) {
	e := newEnv(t)
	for _, ttl := range []string{"9223372036854775807", "288230376151716696", "86400001", "-1", "-9223372036854775808"} {
		status, we, _, _ := e.call("POST", "/v1/consumers", "", `{"id":"c1","ttl_ms":`+ttl+`}`)
		if status != 400 || we.Code != wire.CodeInvalid || !strings.Contains(we.Message, "86400000") {
			t.Errorf("ttl_ms %s: %d %q (%s), want 400 %q with the allowed range", ttl, status, we.Code, we.Message, wire.CodeInvalid)
		}
	}
	if _, ok := e.l.Consumer("c1"); ok {
		t.Fatal("a refused registration created consumer c1")
	}
	status, we, _, b := e.call("POST", "/v1/consumers", "", `{"id":"c1","ttl_ms":86400000}`)
	var res wire.RegisterResponse
	if status != 201 || json.Unmarshal(b, &res) != nil || res.TTLMS != 86400000 {
		t.Fatalf("ttl_ms 86400000: %d %q %s, want 201 with a 24h lease", status, we.Code, b)
	}
}

// TestIDRule: consumer and shape ids are restricted to a printable set;
// anything else is 422 with the rule.
func TestIDRule(t *testing.T) {
	e := newEnv(t)
	lease := e.register("c1").Lease()
	bad := []string{"", ".", "..", "a b", "a/b", "a\xffb", "abc\u202Edef", "ünï", "a\x00b", "a\nb", strings.Repeat("x", 129)}
	for _, id := range bad {
		body, _ := json.Marshal(wire.RegisterRequest{ID: id})
		// json.Marshal turns invalid UTF-8 into U+FFFD: send the raw bytes.
		raw := strings.Replace(string(body), `\ufffd`, "\xff", 1)
		status, we, _, _ := e.call("POST", "/v1/consumers", "", raw)
		if status != 422 || we.Code != wire.CodeInvalidID || !strings.Contains(we.Message, "A-Za-z0-9") {
			t.Errorf("consumer id %q: %d %q (%s), want 422 %q with the rule", id, status, we.Code, we.Message, wire.CodeInvalidID)
		}
		if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00\n ") {
			continue // not a path segment of its own: the mux answers, nothing is created (checked below)
		}
		status, we, _, _ = e.call("PUT", "/v1/shapes/"+id, lease, `{"consumer":"c1","table":"public.orders"}`)
		if status != 422 || we.Code != wire.CodeInvalidID || !strings.Contains(we.Message, "A-Za-z0-9") {
			t.Errorf("shape id %q: %d %q (%s), want 422 %q with the rule", id, status, we.Code, we.Message, wire.CodeInvalidID)
		}
	}
	if n := len(e.l.Consumers()); n != 1 {
		t.Errorf("%d consumers after refused registrations, want 1", n)
	}
	if n := len(e.l.Shapes()); n != 0 {
		t.Errorf("%d shapes after refused PUTs, want 0", n)
	}
	// An id the ledger already holds, from before the rule, keeps working.
	old, err := e.l.Register(ledger.ConsumerSpec{ID: "old id", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.l.PutShape(ledger.ShapeSpec{ID: "old shape", Consumer: "old id", Table: "public.orders"}); err != nil {
		t.Fatal(err)
	}
	if status, we, _, _ := e.call("PUT", "/v1/shapes/old%20shape", old.Lease, `{"consumer":"old id","table":"public.orders"}`); status != 200 {
		t.Errorf("an existing shape with an old id put again: %d %q (%s), want 200", status, we.Code, we.Message)
	}
	if err := e.l.Release(old.ID, old.Lease); err != nil {
		t.Fatal(err)
	}
	if status, we, _, _ := e.call("POST", "/v1/consumers", "", `{"id":"old id"}`); status != 201 {
		t.Errorf("a known consumer with an old id registering again: %d %q (%s), want 201", status, we.Code, we.Message)
	}
	for _, id := range []string{"a", "orders-eu.v2:part_1", strings.Repeat("x", 128)} {
		if status, we, _, _ := e.call("POST", "/v1/consumers", "", `{"id":"`+id+`"}`); status != 201 {
			t.Errorf("consumer id %q: %d %q (%s), want 201", id, status, we.Code, we.Message)
		}
	}
}

// TestRegisterFieldLengths: host and proc_start are bounded, so a
// registration cannot copy a megabyte into the ledger and its journal.
func TestRegisterFieldLengths(t *testing.T) {
	e := newEnv(t)
	for _, body := range []string{
		`{"id":"c1","host":"` + strings.Repeat("h", 256) + `"}`,
		`{"id":"c1","proc_start":"` + strings.Repeat("1", 65) + `"}`,
		`{"id":"c1","host":"` + strings.Repeat("h", 1<<19) + `"}`,
	} {
		status, we, _, _ := e.call("POST", "/v1/consumers", "", body)
		if status != 422 || we.Code != wire.CodeValueTooLong {
			t.Errorf("%.40s...: %d %q (%s), want 422 %q", body, status, we.Code, we.Message, wire.CodeValueTooLong)
		}
	}
	for _, body := range []string{`{"id":"c1","host":"a\u0000b"}`, `{"id":"c1","proc_start":"1\u202e2"}`} {
		status, we, _, _ := e.call("POST", "/v1/consumers", "", body)
		if status != 400 || we.Code != wire.CodeInvalid {
			t.Errorf("%s: %d %q (%s), want 400 %q", body, status, we.Code, we.Message, wire.CodeInvalid)
		}
	}
	if _, ok := e.l.Consumer("c1"); ok {
		t.Fatal("a refused registration created consumer c1")
	}
	body := `{"id":"c1","host":"` + strings.Repeat("h", 255) + `","proc_start":"` + strings.Repeat("1", 64) + `"}`
	if status, we, _, _ := e.call("POST", "/v1/consumers", "", body); status != 201 {
		t.Fatalf("host and proc_start at their limits: %d %q (%s)", status, we.Code, we.Message)
	}
}

// TestListPaging: GET /v1/consumers and GET /v1/shapes answer pages in id
// order; a Ledger-Next header names the cursor of the next page.
func TestListPaging(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k := e.register("c0")
	for i := 1; i < 5; i++ {
		e.register(fmt.Sprintf("c%d", i))
	}
	for i := range 5 {
		if _, err := k.PutShape(ctx, fmt.Sprintf("s%d", i), "public.orders", nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, list := range []string{"/v1/consumers", "/v1/shapes"} {
		var got []string
		after := ""
		for page := 0; ; page++ {
			if page > 5 {
				t.Fatalf("%s: paging does not end", list)
			}
			status, we, h, b := e.call("GET", list+"?limit=2&after="+after, "", "")
			if status != 200 {
				t.Fatalf("%s page %d: %d %q (%s)", list, page, status, we.Code, we.Message)
			}
			var items []struct{ ID string }
			if err := json.Unmarshal(b, &items); err != nil {
				t.Fatalf("%s: the answer is not a list: %v", list, err)
			}
			if len(items) > 2 {
				t.Fatalf("%s page %d holds %d items, limit 2", list, page, len(items))
			}
			for _, it := range items {
				got = append(got, it.ID)
			}
			after = h.Get(wire.HeaderNext)
			if after == "" {
				break
			}
			if after != items[len(items)-1].ID {
				t.Fatalf("%s: next cursor %q, want the last id of the page %q", list, after, items[len(items)-1].ID)
			}
		}
		if len(got) != 5 || got[0][1:] != "0" || got[4][1:] != "4" {
			t.Errorf("%s pages hold %v, want the 5 ids in order", list, got)
		}
		status, we, _, _ := e.call("GET", list+"?limit=0", "", "")
		if status != 400 || we.Code != wire.CodeInvalid || !strings.Contains(we.Message, "10000") {
			t.Errorf("%s?limit=0: %d %q (%s), want 400 with the range", list, status, we.Code, we.Message)
		}
	}
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestInternalErrorLogged: a 500 answer is logged with its cause, so the
// operator learns what the client was told to look for in the log.
func TestInternalErrorLogged(t *testing.T) {
	var logs syncBuffer
	e := newEnvWith(t, func(c *api.Config) {
		c.Logger = zerolog.New(&logs)
		c.Defer = func(string, []string) error { return errors.New("recording the deferral: disk on fire") }
	})
	k := e.register("c1")
	if _, err := k.PutShape(context.Background(), "s1", "public.orders", nil); err != nil {
		t.Fatal(err)
	}
	status, we, _, _ := e.call("POST", "/v1/consumers/c1/ack", k.Lease(), `{"defer":["s1"]}`)
	if status != 500 || we.Code != wire.CodeInternal {
		t.Fatalf("failing defer: %d %q (%s), want 500", status, we.Code, we.Message)
	}
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "disk on fire") {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line == nil {
		t.Fatalf("the 500 answer was not logged with its cause; log:\n%s", logs.String())
	}
	if line["level"] != "error" || line["path"] != "/v1/consumers/c1/ack" || line["method"] != "POST" {
		t.Errorf("log line %v: want level error with the method and path", line)
	}
}

// TestHeartbeatInventoryBounded: the inventory a heartbeat carries is kept
// in the consumer's record, so it holds valid ids and no more of them than
// a consumer may own.
func TestHeartbeatInventoryBounded(t *testing.T) {
	e := newEnvWith(t, func(c *api.Config) { c.Limits = api.Limits{MaxShapesPerConsumer: 3} })
	lease := e.register("c1").Lease()
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"shapes":["a","b","c","d"]}`, 400, wire.CodeInvalid},
		{`{"shapes":["` + strings.Repeat("x", 1<<19) + `"]}`, 422, wire.CodeInvalidID},
		{`{"shapes":["a","b","c"]}`, 200, ""},
	} {
		status, we, _, _ := e.call("POST", "/v1/consumers/c1/heartbeat", lease, tc.body)
		if status != tc.status || we.Code != tc.code {
			t.Errorf("heartbeat %.40s...: %d %q (%s), want %d %q", tc.body, status, we.Code, we.Message, tc.status, tc.code)
		}
	}
	if c, _ := e.l.Consumer("c1"); len(c.Inventory) != 3 {
		t.Errorf("inventory %v, want the 3 shapes of the accepted heartbeat", c.Inventory)
	}
}

// TestCountLimitsConcurrent: registrations and shape creations racing each
// other do not pass a count limit together.
func TestCountLimitsConcurrent(t *testing.T) {
	e := newEnvWith(t, func(c *api.Config) { c.Limits = api.Limits{MaxConsumers: 5, MaxShapesPerConsumer: 4} })
	owner := e.register("owner")
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { e.call("POST", "/v1/consumers", "", fmt.Sprintf(`{"id":"c%d"}`, i)) })
		wg.Go(func() {
			e.call("PUT", fmt.Sprintf("/v1/shapes/s%d", i), owner.Lease(), `{"consumer":"owner","table":"public.orders"}`)
		})
	}
	wg.Wait()
	if n := len(e.l.Consumers()); n > 5 {
		t.Errorf("%d consumers registered, limit 5", n)
	}
	if n := e.l.ShapeCount("owner"); n > 4 {
		t.Errorf("owner has %d shapes, limit 4", n)
	}
	// A creation racing another may be refused while the other is being
	// written; once they are done the limit is reached exactly.
	for i := 20; i < 30; i++ {
		e.call("POST", "/v1/consumers", "", fmt.Sprintf(`{"id":"c%d"}`, i))
		e.call("PUT", fmt.Sprintf("/v1/shapes/s%d", i), owner.Lease(), `{"consumer":"owner","table":"public.orders"}`)
	}
	if n, m := len(e.l.Consumers()), e.l.ShapeCount("owner"); n != 5 || m != 4 {
		t.Errorf("%d consumers and %d shapes of owner, want the limits 5 and 4", n, m)
	}
}
