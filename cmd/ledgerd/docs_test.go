package main

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"
)

// TestFlagsDocumented checks that docs/operations.md lists every flag, so
// an operator reading it sees all of them.
func TestFlagsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var cfg config
	fs := newFlagSet(&cfg, io.Discard)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(string(b), "| `-"+f.Name+"` |") {
			t.Errorf("docs/operations.md has no row for -%s in its flag table", f.Name)
		}
	})
	if n < 20 {
		t.Fatalf("found %d flags", n)
	}
}
