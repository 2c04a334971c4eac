package replident_test

import (
	"reflect"
	"testing"

	"github.com/ledgerd/ledgerd/internal/replident"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestGapsOfMatchesGaps: judging the ledger's shape counts by filter column
// set finds the same tables, columns and shape counts as judging every
// shape, so status can skip copying the shapes.
func TestGapsOfMatchesGaps(t *testing.T) {
	shapes := []ledger.Shape{
		{ShapeSpec: ledger.ShapeSpec{Table: "public.a", Filter: map[string][]string{"tenant": {"1"}}}},
		{ShapeSpec: ledger.ShapeSpec{Table: "public.a", Filter: map[string][]string{"tenant": {"2"}}}},
		{ShapeSpec: ledger.ShapeSpec{Table: "public.a", Filter: map[string][]string{"id": {"2"}}}},
		{ShapeSpec: ledger.ShapeSpec{Table: "public.a", Filter: map[string][]string{"id": {"2"}, "region": {"eu"}}}},
		{ShapeSpec: ledger.ShapeSpec{Table: "public.a"}},
		{ShapeSpec: ledger.ShapeSpec{Table: "public.b", Filter: map[string][]string{"tenant": {"1"}}}},
		{ShapeSpec: ledger.ShapeSpec{Table: "public.c", Filter: map[string][]string{"tenant": {"1"}}}},
		{ShapeSpec: ledger.ShapeSpec{Table: "public.gone", Filter: map[string][]string{"tenant": {"1"}}}},
	}
	uses := []ledger.RelationUse{
		{RelID: 1, Table: "public.a", Shapes: 5, Filters: []ledger.FilterUse{
			{Columns: []string{"id"}, Shapes: 1},
			{Columns: []string{"id", "region"}, Shapes: 1},
			{Columns: []string{"tenant"}, Shapes: 2},
		}},
		{RelID: 2, Table: "public.b", Shapes: 1, Filters: []ledger.FilterUse{{Columns: []string{"tenant"}, Shapes: 1}}},
		{RelID: 3, Table: "public.c", Shapes: 1, Filters: []ledger.FilterUse{{Columns: []string{"tenant"}, Shapes: 1}}},
		{RelID: 4, Table: "public.gone", Shapes: 1, Filters: []ledger.FilterUse{{Columns: []string{"tenant"}, Shapes: 1}}},
	}
	ids := map[string]replident.Identity{
		"public.a": {Table: "public.a", Mode: replident.ModeDefault, Key: []string{"id"}},
		"public.b": {Table: "public.b", Mode: replident.ModeFull},
		"public.c": {Table: "public.c", Mode: replident.ModeNothing},
	}
	if got, want := replident.FilteredTablesOf(uses), replident.FilteredTables(shapes); !reflect.DeepEqual(got, want) {
		t.Errorf("FilteredTablesOf %v, FilteredTables %v", got, want)
	}
	got, want := replident.GapsOf(ids, uses), replident.Gaps(ids, shapes)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GapsOf %+v\nGaps   %+v", got, want)
	}
	if len(want) != 2 {
		t.Errorf("%d gaps, want public.a and public.c", len(want))
	}
}
