package ledger

import (
	"reflect"
	"slices"
	"testing"
)

// TestDefFilterEncoding: a definition keeps its filter in the encoding a
// shape record holds (columns sorted, each with its values sorted and
// without duplicates), reads it back as the same map, and decodes a record
// written in that layout, as files written before definitions were kept
// encoded hold them.
func TestDefFilterEncoding(t *testing.T) {
	f := map[string][]string{"tenant": {"b", "a", "b"}, "region": {"eu"}, "none": {}}
	d := NewDef("public.t", 7, f)
	want := "\x03" + "\x04none\x00" + "\x06region\x01\x02eu" + "\x06tenant\x02\x01a\x01b"
	if d.filter != want {
		t.Fatalf("encoded filter %q, want %q", d.filter, want)
	}
	if got := d.Filter(); !reflect.DeepEqual(got, map[string][]string{"tenant": {"a", "b"}, "region": {"eu"}, "none": {}}) {
		t.Fatalf("Filter() = %v", got)
	}
	if got := d.Columns(); !slices.Equal(got, []string{"none", "region", "tenant"}) {
		t.Fatalf("Columns() = %v", got)
	}
	for col, vals := range d.Each() {
		if col == "tenant" && (!vals.Contains("a") || !vals.Contains("b") || vals.Contains("c") || vals.Len() != 2) {
			t.Fatalf("tenant values %q", slices.Collect(vals.All()))
		}
	}
	if NewDef("public.t", 0, nil).Filtered() || NewDef("public.t", 0, map[string][]string{}).Filter() != nil {
		t.Fatal("an empty filter is a filter")
	}

	// A record as written before: header, consumer, table, filter, binding.
	rec := encodeShape(&shapeState{consumer: "c", gen: 1, Def: &Def{table: "public.t"}})
	rec = rec[:len(rec)-1] // the empty filter's count
	rec = append(rec, want...)
	in := newInterner()
	s, err := decodeShape("s", rec, in)
	if err != nil {
		t.Fatal(err)
	}
	if s.filter != want || s.table != "public.t" || !reflect.DeepEqual(s.Filter(), d.Filter()) {
		t.Fatalf("decoded %q on %s, want %q", s.filter, s.table, want)
	}
	if again, err := decodeShape("s2", rec, in); err != nil || again.Def != s.Def {
		t.Fatalf("a second record of the same definition does not share it: %v", err)
	}
	if enc := encodeShape(s); string(enc) != string(rec) {
		t.Fatalf("re-encoded record differs:\n%q\n%q", enc, rec)
	}
	if s, err := decodeShape("s", noFilterLong(), in); err != nil || s.Filtered() || s.Filter() != nil {
		t.Fatalf("a filter count of zero in two bytes: %v, filtered %v", err, err == nil && s.Filtered())
	}
}

// TestSameDefinitionCanonical: filters that differ only in the order of
// their values, or in duplicates, define the same shape, with or without
// the ledger's Def on either side.
func TestSameDefinitionCanonical(t *testing.T) {
	a := ShapeSpec{Consumer: "c", Table: "public.t", Filter: map[string][]string{"k": {"x", "y"}}}
	b := ShapeSpec{Consumer: "c", Table: "public.t", Filter: map[string][]string{"k": {"y", "x", "x"}}}
	if !a.SameDefinition(b) {
		t.Fatal("the same filter in another order is another definition")
	}
	b.Def = NewDef(b.Table, 0, b.Filter)
	if !a.SameDefinition(b) || !b.SameDefinition(a) {
		t.Fatal("a spec with its Def differs from the same spec without")
	}
	c := b
	c.Filter, c.Def = map[string][]string{"k": {"x"}}, NewDef(b.Table, 0, map[string][]string{"k": {"x"}})
	if b.SameDefinition(c) {
		t.Fatal("another filter is the same definition")
	}
}

// TestDefOnly: Only reads the column and value of a filter of one column
// allowing one value, and refuses every other filter.
func TestDefOnly(t *testing.T) {
	long := string(make([]byte, 300)) // a length of two varint bytes
	for _, tc := range []struct {
		f        map[string][]string
		col, val string
		ok       bool
	}{
		{map[string][]string{"tenant": {"42"}}, "tenant", "42", true},
		{map[string][]string{"tenant": {long}}, "tenant", long, true},
		{map[string][]string{long: {""}}, long, "", true},
		{map[string][]string{"tenant": {"a", "b"}}, "", "", false},
		{map[string][]string{"tenant": {}}, "", "", false},
		{map[string][]string{"a": {"1"}, "b": {"2"}}, "", "", false},
		{nil, "", "", false},
	} {
		col, val, ok := NewDef("public.t", 0, tc.f).Only()
		if col != tc.col || val != tc.val || ok != tc.ok {
			t.Errorf("Only() of %v = %q, %q, %v; want %q, %q, %v", tc.f, col, val, ok, tc.col, tc.val, tc.ok)
		}
	}
}
