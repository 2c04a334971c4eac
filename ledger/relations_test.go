package ledger_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestShapeRelationBinding: a shape's relation binding is stored with it
// and survives a restart; a shape created without one (as every shape
// recorded before binding existed) is bound later by BindShapes, which
// keeps its durable positions and leaves bound shapes alone.
func TestShapeRelationBinding(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := ledger.Open(testConfig(path, clk))
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, l, "c", 0)
	if _, _, err := l.PutShape(ledger.ShapeSpec{ID: "bound", Consumer: "c", Table: "public.t", RelID: 16385, BoundAt: 0x2000}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.PutShape(ledger.ShapeSpec{ID: "old", Consumer: "c", Table: "public.t", Filter: map[string][]string{"k": {"1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.PutShape(ledger.ShapeSpec{ID: "old2", Consumer: "c", Table: "public.t"}); err != nil {
		t.Fatal(err)
	}
	l.Track(0x3000, 0x3010, []string{"old"})
	mustAck(t, l, "old", 0x3000)
	if err := l.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sh, _ := l.Shape("old"); sh.RelID != 0 {
		t.Fatalf("shape created without a binding has relation %d", sh.RelID)
	}
	if err := l.BindShapes([]string{"old", "old2", "bound", "unknown"}, 16390, 0x4000); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openAt(t, testConfig(path, clk))
	for _, want := range []struct {
		id    string
		relID uint32
		at    ledger.LSN
	}{{"bound", 16385, 0x2000}, {"old", 16390, 0x4000}, {"old2", 16390, 0x4000}} {
		sh, ok := l.Shape(want.id)
		if !ok || sh.RelID != want.relID || sh.BoundAt != want.at {
			t.Errorf("after a restart shape %s is bound to relation %d at %s (live %v), want %d at %s",
				want.id, sh.RelID, sh.BoundAt, ok, want.relID, want.at)
		}
	}
	if sh, _ := l.Shape("old"); sh.FlushedLSN != 0x3000 || sh.Filter["k"][0] != "1" {
		t.Errorf("binding changed shape old: flushed %s, filter %v", sh.FlushedLSN, sh.Filter)
	}
	if err := l.BindShapes([]string{"old"}, 0, 0x5000); err == nil {
		t.Error("binding to relation 0 accepted")
	}
}

// TestRelationChanged: a shape is judged against its relation's name and
// columns. A rename or a dropped filter column is a change, with the names
// in the evidence; added columns and dropped columns the filter does not
// name are not.
func TestRelationChanged(t *testing.T) {
	s := ledger.ShapeSpec{ID: "s", Table: "public.orders", RelID: 7, Filter: map[string][]string{"tenant": {"a"}, "region": {"eu"}}}
	for _, tc := range []struct {
		table   string
		columns []string
		want    []string // words of the evidence; nil = no change
	}{
		{"public.orders", []string{"id", "tenant", "region"}, nil},
		{"public.orders", []string{"id", "tenant", "region", "added"}, nil},
		{"public.orders", []string{"tenant", "region"}, nil},
		{"public.orders_v2", []string{"id", "tenant", "region"}, []string{"public.orders", "renamed to public.orders_v2", "relation 7"}},
		{"public.orders", []string{"id", "region"}, []string{"column tenant", "public.orders", "dropped"}},
		{"public.orders", []string{"id"}, []string{"columns region, tenant", "dropped"}},
	} {
		got := s.RelationChanged(tc.table, tc.columns)
		if tc.want == nil {
			if got != "" {
				t.Errorf("%s %v: change %q, want none", tc.table, tc.columns, got)
			}
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s %v: evidence %q lacks %q", tc.table, tc.columns, got, w)
			}
		}
	}
}
