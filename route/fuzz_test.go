package route_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/ledgerd/ledgerd/route"
	"github.com/ledgerd/ledgerd/stream"
)

// parseRow reads a fuzzed row: comma-separated "name=value" (text),
// "name" (NULL) or "~name" (unchanged TOAST value, absent).
func parseRow(s string) []stream.Column {
	if s == "" {
		return nil
	}
	var tup []stream.Column
	for _, item := range strings.Split(s, ",") {
		switch name, value, ok := strings.Cut(item, "="); {
		case ok:
			tup = append(tup, stream.Column{Name: name, Kind: stream.KindText, Value: value})
		case strings.HasPrefix(item, "~"):
			tup = append(tup, stream.Column{Name: item[1:], Kind: stream.KindUnchanged})
		default:
			tup = append(tup, stream.Column{Name: item, Kind: stream.KindNull})
		}
	}
	return tup
}

// reaches is the filter rule written plainly, the oracle for the indexed
// router: every filter column the row carries (the first column of that
// name; an unchanged TOAST value is not carried) holds an allowed value,
// NULL being none of them; a column the row does not carry matches.
func reaches(filter map[string][]string, tup []stream.Column) bool {
	for col, allowed := range filter {
		i := slices.IndexFunc(tup, func(c stream.Column) bool { return c.Name == col })
		if i < 0 || tup[i].Kind == stream.KindUnchanged {
			continue
		}
		if tup[i].Kind == stream.KindNull || !slices.Contains(allowed, tup[i].Value) {
			return false
		}
	}
	return true
}

func want(shapes []route.Shape, ch stream.Change) []string {
	var ids []string
	for _, s := range shapes {
		if s.Table != ch.Table {
			continue
		}
		var ok bool
		switch ch.Op {
		case stream.OpTruncate:
			ok = true
		case stream.OpInsert:
			ok = reaches(s.Filter, ch.New)
		case stream.OpDelete:
			ok = reaches(s.Filter, ch.Old)
		default:
			ok = reaches(s.Filter, ch.New) || (ch.Old != nil && reaches(s.Filter, ch.Old))
		}
		if ok {
			ids = append(ids, s.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// FuzzRouteFilter: for any filter and any row, the indexed router reaches
// exactly the shapes the plain filter rule says (never fewer: I1; no more
// than the rule's over-delivery for absent columns), and forgets a removed
// shape.
func FuzzRouteFilter(f *testing.F) {
	f.Add(`{"tenant":["a","b"],"region":["eu"]}`, "id=1,tenant=a,region=eu", "", uint8(0), false)
	f.Add(`{"tenant":["a"]}`, "tenant", "tenant=a", uint8(1), true)
	f.Add(`{"tenant":[]}`, "~tenant,id=2", "id=2", uint8(2), true)
	f.Add(`{"":[""]}`, "=", "", uint8(3), false)
	f.Add(`{"a":["1"],"b":["2","3"],"c":["x"]}`, "a=1,b=3,a=2", "b=9", uint8(1), true)
	f.Add(`null`, "", "", uint8(9), false)
	f.Fuzz(func(t *testing.T, filterJSON, newRow, oldRow string, op uint8, hasOld bool) {
		var filter map[string][]string
		if json.Unmarshal([]byte(filterJSON), &filter) != nil {
			filter = nil
		}
		var first map[string][]string
		for k, v := range filter {
			first = map[string][]string{k: v}
			break
		}
		shapes := []route.Shape{
			{ID: "fuzzed", Consumer: "c1", Table: "public.t", Filter: filter},
			{ID: "one-column", Consumer: "c1", Table: "public.t", Filter: first},
			{ID: "all", Consumer: "c2", Table: "public.t"},
			{ID: "other-table", Consumer: "c2", Table: "public.u", Filter: filter},
		}
		r := route.New()
		for _, s := range shapes {
			r.Put(s)
		}
		ops := []stream.Op{stream.OpInsert, stream.OpUpdate, stream.OpDelete, stream.OpTruncate, "merge"}
		ch := stream.Change{Op: ops[int(op)%len(ops)], Table: "public.t", New: parseRow(newRow)}
		if hasOld {
			ch.Old = parseRow(oldRow)
		}
		if ch.Op == stream.OpDelete {
			ch.Old, ch.New = ch.New, nil
		}
		txn := &stream.Txn{Changes: []stream.Change{ch}}
		got := r.Route(txn)
		if w := want(shapes, ch); !slices.Equal(got.Changes[0], w) || !slices.Equal(got.Shapes, w) {
			t.Fatalf("change %+v with filter %v reached %v, the rule says %v", ch, filter, got.Changes[0], w)
		}
		r.Remove("fuzzed")
		if got := r.Route(txn); slices.Contains(got.Shapes, "fuzzed") {
			t.Fatalf("a removed shape is still reached: %v", got.Shapes)
		}
	})
}
