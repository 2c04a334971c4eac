package ledger

import (
	"encoding/binary"
	"iter"
	"slices"
	"strings"
)

// Def is a shape's definition as the ledger holds it: its table, relation
// binding and filter, the filter in canonical form (columns sorted, each
// with its values sorted and without duplicates) and encoded as a shape
// record holds it. Shapes with the same definition share one Def, and the
// router indexes that same Def instead of a copy, so a million shapes with
// a million distinct filters hold a million short strings, not a million
// maps. Its table, binding and filter never change once made: read them
// from any goroutine.
type Def struct {
	table  string  // interned
	filter string  // as a shape record holds it (canonFilter); "" for no filter
	cols   *colSet // the filter's columns, interned; nil for no filter
	relID  uint32
	refs   int32 // live shapes using it (tracker.index); guarded by Ledger.mu
}

// colSet is a set of filter column names, interned: a million definitions
// filter on a handful of column sets.
type colSet struct {
	key   string   // names sorted and NUL-joined
	names []string // sorted
}

// NewDef returns the definition of a shape on table (bound to relation
// relID, 0 if not bound) with the given filter, normalised. It is for
// shapes that do not come from the ledger; the ledger's shapes carry their
// Def (ShapeSpec.Def).
func NewDef(table string, relID uint32, filter map[string][]string) *Def {
	d := &Def{table: table, relID: relID, filter: canonFilter(filter)}
	if d.filter != "" {
		names := sortedKeys(filter)
		d.cols = &colSet{key: strings.Join(names, "\x00"), names: names}
	}
	return d
}

// Table returns the table the shape is on ("schema.table").
func (d *Def) Table() string { return d.table }

// RelID returns the relation OID the shape is bound to, 0 if not bound.
func (d *Def) RelID() uint32 { return d.relID }

// Filtered reports whether the definition has a filter.
func (d *Def) Filtered() bool { return d.filter != "" }

// Columns returns the filter's column names, sorted. The slice is shared:
// read it, never change it.
func (d *Def) Columns() []string {
	if d.cols == nil {
		return nil
	}
	return d.cols.names
}

// Filter returns the filter as a new map (nil for no filter): what views
// and the wire show.
func (d *Def) Filter() map[string][]string {
	if d.filter == "" {
		return nil
	}
	out := make(map[string][]string, len(d.cols.names))
	for col, vals := range d.Each() {
		vs := make([]string, 0, vals.Len())
		for v := range vals.All() {
			vs = append(vs, v)
		}
		out[col] = vs
	}
	return out
}

// Each yields the filter's columns in order, each with its values.
func (d *Def) Each() iter.Seq2[string, Values] {
	return func(yield func(string, Values) bool) {
		f := d.filter
		if f == "" {
			return
		}
		n, f := uvarintString(f)
		for range n {
			var col string
			var nv uint64
			col, f = stringOf(f)
			nv, f = uvarintString(f)
			rest := f
			for range nv {
				_, f = stringOf(f)
			}
			if !yield(col, Values{n: int(nv), enc: rest[:len(rest)-len(f)]}) {
				return
			}
		}
	}
}

// Only returns the column and value of a filter of one column allowing
// one value, the common case, with ok; read without walking the filter.
func (d *Def) Only() (col, value string, ok bool) {
	f := d.filter
	if len(f) < 4 || f[0] != 1 {
		return "", "", false
	}
	col, f = stringOf(f[1:])
	if len(f) < 2 || f[0] != 1 {
		return "", "", false
	}
	value, _ = stringOf(f[1:])
	return col, value, true
}

// Values are the values a filter column allows, in order.
type Values struct {
	n   int
	enc string // each value length-prefixed
}

// Len returns the number of values.
func (v Values) Len() int { return v.n }

// All yields the values in order.
func (v Values) All() iter.Seq[string] {
	return func(yield func(string) bool) {
		f := v.enc
		for range v.n {
			var s string
			s, f = stringOf(f)
			if !yield(s) {
				return
			}
		}
	}
}

// Contains reports whether s is among the values.
func (v Values) Contains(s string) bool {
	for x := range v.All() {
		if x == s {
			return true
		}
	}
	return false
}

// uvarintString and stringOf read a filter's encoding from a string known
// to be well formed (canonFilter's output, or a record readFilter
// checked).
func uvarintString(s string) (uint64, string) {
	var v uint64
	var shift uint
	for i := 0; i < len(s); i++ {
		b := s[i]
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, s[i+1:]
		}
		shift += 7
	}
	return v, ""
}

func stringOf(s string) (string, string) {
	n, s := uvarintString(s)
	return s[:n], s[n:]
}

// canonFilter is the canonical encoding of a filter, as a shape record
// holds it: the number of columns, then the columns sorted, each
// length-prefixed and followed by the number of its values and the values,
// sorted, without duplicates and length-prefixed (uvarints); "" for no
// filter. The map is not changed.
func canonFilter(f map[string][]string) string {
	if len(f) == 0 {
		return ""
	}
	b := binary.AppendUvarint(nil, uint64(len(f)))
	for _, k := range sortedKeys(f) {
		vs := slices.Compact(slices.Sorted(slices.Values(f[k])))
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return string(b)
}

// appendDefFilter appends the filter as a record holds it.
func appendDefFilter(b []byte, filter string) []byte {
	if filter == "" {
		return append(b, 0)
	}
	return append(b, filter...)
}

// canonFilter is the spec's filter in canonical form.
func (s ShapeSpec) canonFilter() string {
	if s.Def != nil {
		return s.Def.filter
	}
	return canonFilter(s.Filter)
}

// columns returns the spec's filter columns, sorted.
func (s ShapeSpec) columns() []string {
	if s.Def != nil {
		return s.Def.Columns()
	}
	return sortedKeys(s.Filter)
}
