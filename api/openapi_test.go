package api_test

import (
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
