package main_test

import (
	"os"
	"strings"
	"testing"

	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// TestMetricsDocumented scrapes a running daemon and checks that
// docs/operations.md explains every metric family it exports.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.NewDB(t, cluster)
	d := startDaemon(t, dsn, slotName(t), "")
	req, _ := newAuthRequest("GET", d.url+"/metrics", "")
	text, err := d.httpDo(req)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "#" || f[1] != "TYPE" || !strings.HasPrefix(f[2], "ledgerd_") {
			continue
		}
		n++
		if !strings.Contains(string(doc), "`"+f[2]+"`") && !strings.Contains(string(doc), "`"+f[2]+"{") {
			t.Errorf("docs/operations.md does not explain metric %s", f[2])
		}
	}
	if n < 20 {
		t.Fatalf("found %d ledgerd_ metric families in /metrics:\n%s", n, text)
	}
}
