package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/ledgerd/ledgerd/api"
)

// The end-to-end tests check every call they make against api/openapi.yaml,
// the document the daemon serves: a request the document calls invalid must
// be refused with a 4xx, and every answer (status, headers, body, and each
// frame of a change stream) must be one the document declares. A handler
// and the document cannot drift apart without a test failing.

var (
	apiDoc    *openapi3.T
	apiRouter routers.Router
	frameSpec *openapi3.Schema // one line of the change stream
)

// loadOpenAPI loads and validates the embedded document. The document is
// OpenAPI 3.1; kin-openapi validates its schemas as JSON Schema 2020-12.
func loadOpenAPI() error {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPI())
	if err != nil {
		return fmt.Errorf("loading api/openapi.yaml: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return fmt.Errorf("api/openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	// The tests' daemons listen on random ports and unix sockets: match
	// paths whatever the server.
	doc.Servers = nil
	r, err := legacy.NewRouter(doc)
	if err != nil {
		return fmt.Errorf("routing api/openapi.yaml: %w", err)
	}
	op := doc.Paths.Find("/v1/consumers/{id}/stream").Get
	frameSpec = op.Responses.Status(200).Value.Content.Get("application/x-ndjson").Schema.Value
	apiDoc, apiRouter = doc, r
	return nil
}

// apiChecker collects what the calls of one test broke of the document and
// reports it when the test ends. Calls may run on goroutines of their own
// (streams), so findings are collected rather than reported as they come.
type apiChecker struct {
	t       testing.TB
	mu      sync.Mutex
	found   []string
	calls   int
	streams []*frameChecker
}

func newAPIChecker(t testing.TB) *apiChecker {
	c := &apiChecker{t: t}
	t.Cleanup(func() {
		c.mu.Lock()
		streams := c.streams
		c.mu.Unlock()
		for _, f := range streams {
			f.drain() // streams the test left open
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, f := range c.found {
			t.Errorf("api/openapi.yaml: %s", f)
		}
	})
	return c
}

func (c *apiChecker) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.found) < 20 {
		c.found = append(c.found, fmt.Sprintf(format, args...))
	}
}

// transport wraps base so that every call it carries is checked.
func (c *apiChecker) transport(base http.RoundTripper) http.RoundTripper {
	return &checkingTransport{c: c, base: base}
}

// client returns an HTTP client whose calls are checked.
func (c *apiChecker) client() *http.Client {
	return &http.Client{Transport: c.transport(http.DefaultTransport)}
}

type checkingTransport struct {
	c    *apiChecker
	base http.RoundTripper
}

func (ct *checkingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c := ct.c
	call := req.Method + " " + req.URL.Path
	var reqBody []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		reqBody = b
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	route, params, routeErr := apiRouter.FindRoute(req)
	var input *openapi3filter.RequestValidationInput
	var reqErr error
	if routeErr == nil {
		vreq := req.Clone(req.Context())
		vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
		if len(reqBody) > 0 && vreq.Header.Get("Content-Type") == "" {
			// ledgerd reads every body as JSON, whatever its Content-Type.
			vreq.Header.Set("Content-Type", "application/json")
		}
		input = &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true}}
		reqErr = openapi3filter.ValidateRequest(req.Context(), input)
	}
	resp, err := ct.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	if routeErr != nil {
		// Not a call of the document: the daemon must say so.
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			c.fail("%s is not in the document (%v) but ledgerd answered %d", call, routeErr, resp.StatusCode)
		}
		return ct.checkErrorBody(call, resp)
	}
	if reqErr != nil && (resp.StatusCode < 400 || resp.StatusCode > 499) {
		c.fail("%s: the document calls the request invalid (%v) but ledgerd answered %d", call, reqErr, resp.StatusCode)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: input, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: mt != "application/json"}}
	if mt == "application/x-ndjson" && resp.StatusCode == http.StatusOK {
		// An endless body: check the status and headers now, each frame
		// as the caller reads it.
		out.Body = io.NopCloser(bytes.NewReader(nil))
		if err := openapi3filter.ValidateResponse(req.Context(), out); err != nil {
			c.fail("%s: %v", call, err)
		}
		fc := &frameChecker{c: c, call: call, rc: resp.Body}
		c.mu.Lock()
		c.streams = append(c.streams, fc)
		c.mu.Unlock()
		resp.Body = fc
		return resp, nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(req.Context(), out); err != nil {
		c.fail("%s: %d %s: %v", call, resp.StatusCode, clipBody(body), err)
	}
	return resp, nil
}

// checkErrorBody checks the answer of a call the document does not have: an
// Error object.
func (ct *checkingTransport) checkErrorBody(call string, resp *http.Response) (*http.Response, error) {
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		ct.c.fail("%s: %d answer is not JSON: %s", call, resp.StatusCode, clipBody(body))
		return resp, nil
	}
	if err := apiDoc.Components.Schemas["Error"].Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
		ct.c.fail("%s: %d answer is not an Error: %v", call, resp.StatusCode, err)
	}
	return resp, nil
}

// frameChecker passes a change stream through and checks each complete
// line against the Frame schema. Lines are only copied as they are read and
// checked when the stream is closed or the test ends (or once 32 MiB wait):
// checking as they come would slow the reader, on two shared cores, enough
// to change what tests that race a reader against the daemon see.
type frameChecker struct {
	c    *apiChecker
	call string
	rc   io.ReadCloser
	line []byte

	mu     sync.Mutex
	queue  [][]byte
	queued int
}

// maxQueued is how many bytes of frames may wait to be checked.
const maxQueued = 32 << 20

func (f *frameChecker) Read(p []byte) (int, error) {
	n, err := f.rc.Read(p)
	f.line = append(f.line, p[:n]...)
	full := false
	for {
		i := bytes.IndexByte(f.line, '\n')
		if i < 0 {
			break
		}
		f.mu.Lock()
		f.queue = append(f.queue, bytes.Clone(f.line[:i]))
		f.queued += i
		full = f.queued > maxQueued
		f.mu.Unlock()
		f.line = f.line[i+1:]
	}
	if len(f.line) == 0 {
		f.line = nil // do not keep a large frame's buffer
	}
	if full {
		f.drain()
	}
	return n, err
}

// drain checks the frames read so far.
func (f *frameChecker) drain() {
	f.mu.Lock()
	q := f.queue
	f.queue, f.queued = nil, 0
	f.mu.Unlock()
	for _, line := range q {
		f.check(line)
	}
}

func (f *frameChecker) check(line []byte) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		f.c.fail("%s: a frame is not JSON: %v: %s", f.call, err, clipBody(line))
		return
	}
	if err := frameSpec.VisitJSON(toJSONValue(v), openapi3.EnableJSONSchema2020()); err != nil {
		f.c.fail("%s: frame %s does not match Frame: %v", f.call, clipBody(line), err)
	}
}

// Close closes the stream and checks every frame read.
func (f *frameChecker) Close() error {
	err := f.rc.Close()
	f.drain()
	return err
}

// toJSONValue turns json.Number into float64, as the schema validator
// expects of decoded JSON.
func toJSONValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		n, _ := x.Float64()
		return n
	case map[string]any:
		for k, e := range x {
			x[k] = toJSONValue(e)
		}
	case []any:
		for i, e := range x {
			x[i] = toJSONValue(e)
		}
	}
	return v
}

func clipBody(b []byte) string {
	if len(b) > 300 {
		return fmt.Sprintf("%q...", b[:300])
	}
	return fmt.Sprintf("%q", b)
}

// The checking itself must catch a mismatch, or the suite would pass
// whatever the handlers answer.
func TestOpenAPICheckerCatchesDrift(t *testing.T) {
	inner := &apiChecker{t: t}
	answer := func(status int, ct, body string) http.RoundTripper {
		return roundTripFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {ct}},
				Body: io.NopCloser(bytes.NewBufferString(body))}, nil
		})
	}
	cases := []struct {
		name, method, path, body string
		rt                       http.RoundTripper
		frames                   bool
	}{
		{"undocumented answer field", "GET", "/v1/status", "",
			answer(200, "application/json", `{"slot":"s","streaming":true,"confirmed_flush_lsn":"0/1","safe_flush_lsn":"0/1","reported_flush_lsn":"0/1","wal_end":"0/1","retained_bytes":0,"wal_status":"","counts":{"consumers":0,"consumers_live":0,"consumers_streaming":0,"consumers_gone":0,"shapes":0,"shapes_pending":0,"tombstones":0},"holders":[],"new_field":1}`), false},
		{"undocumented status", "GET", "/v1/evictions", "", answer(418, "application/json", `{"error":"internal","message":"x"}`), false},
		{"invalid request accepted", "POST", "/v1/consumers", `{"id":"c","bogus":1}`,
			answer(201, "application/json", `{"id":"c","lease":"l","ttl_ms":1,"expires_at":"2026-01-01T00:00:00Z"}`), false},
		{"unknown error code", "GET", "/v1/shapes/x", "", answer(404, "application/json", `{"error":"nope","message":"x"}`), false},
		{"unknown path answered 200", "GET", "/v2/x", "", answer(200, "application/json", `{}`), false},
		{"bad frame", "GET", "/v1/consumers/c/stream", "", answer(200, "application/x-ndjson", `{"type":"txn","lsn":"0/1"}`+"\n"), true},
	}
	for _, tc := range cases {
		inner.found = nil
		req, _ := http.NewRequest(tc.method, "http://127.0.0.1:1"+tc.path, bytes.NewBufferString(tc.body))
		req.Header.Set("Ledger-Lease", "l")
		resp, err := inner.transport(tc.rt).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if tc.frames {
			_, _ = io.Copy(io.Discard, bufio.NewReader(resp.Body))
		}
		resp.Body.Close()
		if len(inner.found) == 0 {
			t.Errorf("%s: the checker found nothing", tc.name)
		}
	}
	// And a conforming call passes.
	inner.found = nil
	req, _ := http.NewRequest("GET", "http://127.0.0.1:1/healthz", nil)
	resp, err := inner.transport(answer(200, "application/json", `{"status":"ok"}`)).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(inner.found) > 0 {
		t.Errorf("a conforming call: %v", inner.found)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
