package api_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/ledgerd/ledgerd/api"
)

// The daemon serves the document it was built with, to the same callers as
// the other read-only calls.
func TestOpenAPIServed(t *testing.T) {
	e := newEnv(t)
	want, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("GET", e.srv.URL+"/v1/openapi.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(got) != string(want) {
		t.Fatalf("GET /v1/openapi.yaml: %d, %d bytes; want 200 and the %d bytes of api/openapi.yaml", resp.StatusCode, len(got), len(want))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/yaml" {
		t.Errorf("Content-Type %q, want application/yaml", ct)
	}
	if status, we := e.raw("GET", "/v1/openapi.yaml", "", "", ""); status != 401 {
		t.Errorf("without the token: %d %s, want 401", status, we.Code)
	}
	if status, we := e.raw("POST", "/v1/openapi.yaml", "", "Bearer "+token, ""); status != 405 {
		t.Errorf("POST: %d %s, want 405", status, we.Code)
	}
}

// TestErrorCodesDocumented checks that every error code of api/wire is in
// the OpenAPI document and in docs/api.md, so a new code cannot ship
// undocumented.
func TestErrorCodesDocumented(t *testing.T) {
	f, err := parser.ParseFile(gotoken.NewFileSet(), "wire/wire.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || !strings.HasPrefix(vs.Names[0].Name, "Code") || len(vs.Values) != 1 {
			return true
		}
		if lit, ok := vs.Values[0].(*ast.BasicLit); ok {
			v, _ := strconv.Unquote(lit.Value)
			codes = append(codes, v)
		}
		return true
	})
	if len(codes) < 20 {
		t.Fatalf("found %d error codes in wire/wire.go; the parse is wrong", len(codes))
	}
	for _, doc := range []string{"openapi.yaml", "../docs/api.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range codes {
			if !strings.Contains(string(b), c) {
				t.Errorf("%s does not document error code %s", doc, c)
			}
		}
	}
}

// TestOpenAPIHasEveryRoute checks that the document and the handlers name
// the same calls: a route added to the server without its description, or
// a described call the server lost, fails here even if no end-to-end test
// makes the call.
func TestOpenAPIHasEveryRoute(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(t.Context()); err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	src, err := os.ReadFile("server.go")
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]bool{}
	for _, m := range regexp.MustCompile(`m\.Handle(?:Func)?\("([A-Z]+) (/[^"]*)"`).FindAllStringSubmatch(string(src), -1) {
		routes[m[1]+" "+m[2]] = true
	}
	if len(routes) < 15 {
		t.Fatalf("found %d routes in server.go", len(routes))
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	for r := range routes {
		if !documented[r] {
			t.Errorf("%s is served but not in api/openapi.yaml", r)
		}
	}
	for r := range documented {
		if !routes[r] {
			t.Errorf("%s is in api/openapi.yaml but not served", r)
		}
	}
}

// TestDocExamplesMatchTheDocument checks the JSON examples of docs/api.md
// against api/openapi.yaml: frames against Frame, changes against Change,
// error answers against Error, shape bodies against ShapeRequest. Each
// ```json block is one JSON value, or one per line.
func TestDocExamplesMatchTheDocument(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(string(md), -1)
	if len(blocks) < 5 {
		t.Fatalf("found %d json blocks in docs/api.md", len(blocks))
	}
	checked := 0
	check := func(v map[string]any, text string) {
		var schema string
		switch {
		case v["type"] != nil:
			schema = "Frame"
		case v["error"] != nil:
			schema = "Error"
		case v["op"] != nil:
			schema = "Change"
		case v["consumer"] != nil && v["table"] != nil:
			schema = "ShapeRequest"
		default:
			return
		}
		checked++
		if err := doc.Components.Schemas[schema].Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
			t.Errorf("docs/api.md example %s is not a %s: %v", text, schema, err)
		}
	}
	for _, b := range blocks {
		text := strings.TrimSpace(b[1])
		var v map[string]any
		if json.Unmarshal([]byte(text), &v) == nil {
			check(v, text)
			continue
		}
		for _, line := range strings.Split(text, "\n") {
			var v map[string]any
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Errorf("docs/api.md example is neither one JSON value nor one a line: %v: %s", err, line)
				continue
			}
			check(v, line)
		}
	}
	if checked < 8 {
		t.Errorf("checked %d examples", checked)
	}
}
