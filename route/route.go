package route

import (
	"iter"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// Shape is what the router needs to know of a shape.
type Shape struct {
	ID       string
	Consumer string
	Table    string              // "schema.table"
	Filter   map[string][]string // column -> allowed text values; nil or empty = every row
	// RelID is the relation OID the shape is bound to (ledger.ShapeSpec):
	// a bound shape gets the changes of that relation whatever its name; an
	// unbound one (0) the changes of the table named Table.
	RelID   uint32
	BoundAt ledger.LSN // WAL position of the binding
}

// relKey indexes shapes by relation identity: the OID for bound shapes,
// the table name for shapes not bound yet.
type relKey struct {
	id   uint32
	name string
}

func keyOf(s Shape) relKey {
	if s.RelID != 0 {
		return relKey{id: s.RelID}
	}
	return relKey{name: s.Table}
}

// Result is the routing of one transaction.
type Result struct {
	// Shapes are the ids of every shape the transaction reaches, sorted,
	// each once.
	Shapes []string
	// Changes holds, for each change of the transaction (same index), the
	// sorted ids of the shapes it reaches; nil for a change that reaches none.
	Changes [][]string
	// Absent holds, for each change (same index), the sorted ids among
	// Changes[i] of the filtered shapes it reaches only because a filter
	// column was absent from it: a key-only or missing old tuple, or an
	// unchanged TOAST value. Those deliveries may be over-deliveries (the
	// row may not match). Absent is nil when no change was.
	Absent [][]string
}

// entry is an indexed shape: 48 bytes, its definition shared.
type entry struct {
	id, consumer string
	boundAt      ledger.LSN
	*compiled
}

func (e *entry) shape() Shape {
	return Shape{ID: e.id, Consumer: e.consumer, Table: e.table, Filter: e.filter, RelID: e.relID, BoundAt: e.boundAt}
}

// compiled is a shape definition (table, relation, filter) with its filter
// compiled to sets. Shapes with the same definition share one
// (Router.filters), so a million shapes over a few thousand definitions hold
// a few thousand of them.
type compiled struct {
	table  string
	relID  uint32
	filter map[string][]string
	cols   []string                       // filter columns, most selective first
	sets   map[string]map[string]struct{} // column -> allowed values
	key    string                         // Router.filters key
	refs   int                            // entries using it
}

// rel is the index key of the definition's relation.
func (c *compiled) rel() relKey {
	if c.relID != 0 {
		return relKey{id: c.relID}
	}
	return relKey{name: c.table}
}

// set is a set of indexed shapes.
type set = map[*entry]struct{}

// tableIndex holds the shapes of one table.
type tableIndex struct {
	n          int                     // shapes on the table
	unfiltered set                     // shapes without a filter
	byCol      map[string]*columnIndex // filtered shapes, by their first filter column
}

// columnIndex indexes filtered shapes by the allowed values of one column.
type columnIndex struct {
	n       int            // shapes indexed on this column
	byValue map[string]set // value -> shapes allowing it
	none    set            // shapes allowing no value of it (nil until one does)
}

// each calls f with every shape indexed on the column, once each.
func (ci *columnIndex) each(f func(*entry)) {
	seen := make(set, ci.n)
	visit := func(m set) {
		for e := range m {
			if _, ok := seen[e]; !ok {
				seen[e] = struct{}{}
				f(e)
			}
		}
	}
	for _, m := range ci.byValue {
		visit(m)
	}
	visit(ci.none)
}

// each calls f with every shape on the table, once each.
func (t *tableIndex) each(f func(*entry)) {
	for e := range t.unfiltered {
		f(e)
	}
	for _, ci := range t.byCol {
		ci.each(f)
	}
}

// Router maps transactions to shapes. The zero value is not usable; call New.
type Router struct {
	mu      sync.RWMutex
	shapes  map[string]*entry
	filters map[string]*compiled // interned compiled filters, by filterKey
	tables  map[relKey]*tableIndex
	probes  atomic.Uint64 // column comparisons made by Route, for tests and benchmarks
}

// New returns an empty router.
func New() *Router {
	return &Router{shapes: map[string]*entry{}, filters: map[string]*compiled{}, tables: map[relKey]*tableIndex{}}
}

// Put adds a shape or replaces the one with the same id.
func (r *Router) Put(s Shape) {
	key := defKey(s.Table, s.RelID, filterKey(s.Filter))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.putLocked(s, key)
}

// defKey is the key of a definition in Router.filters.
func defKey(table string, relID uint32, filter string) string {
	return strconv.FormatUint(uint64(relID), 10) + ":" + strconv.Itoa(len(table)) + ":" + table + filter
}

func (r *Router) putLocked(s Shape, key string) {
	r.removeLocked(s.ID)
	r.putCompiled(s, r.compiled(s, key))
}

// compiled returns the interned definition of key, made from s if new.
func (r *Router) compiled(s Shape, key string) *compiled {
	c := r.filters[key]
	if c == nil {
		c = compile(s.Filter)
		c.table, c.relID, c.filter, c.key = s.Table, s.RelID, s.Filter, key
		r.filters[key] = c
	}
	return c
}

// putCompiled indexes s, whose id is not routed, with its definition c.
func (r *Router) putCompiled(s Shape, c *compiled) {
	if c.refs == 0 {
		r.filters[c.key] = c // a removal just before may have forgotten it
	}
	c.refs++
	e := &entry{id: s.ID, consumer: s.Consumer, boundAt: s.BoundAt, compiled: c}
	r.shapes[s.ID] = e
	t := r.tables[keyOf(s)]
	if t == nil {
		t = &tableIndex{unfiltered: set{}, byCol: map[string]*columnIndex{}}
		r.tables[keyOf(s)] = t
	}
	t.n++
	if len(e.cols) == 0 {
		t.unfiltered[e] = struct{}{}
		return
	}
	col := e.cols[0]
	ci := t.byCol[col]
	if ci == nil {
		ci = &columnIndex{byValue: map[string]set{}}
		t.byCol[col] = ci
	}
	ci.n++
	if len(e.sets[col]) == 0 {
		if ci.none == nil {
			ci.none = set{}
		}
		ci.none[e] = struct{}{}
	}
	for v := range e.sets[col] {
		m := ci.byValue[v]
		if m == nil {
			m = set{}
			ci.byValue[v] = m
		}
		m[e] = struct{}{}
	}
}

// PutAll adds shapes under one lock, as at start: each distinct definition
// is compiled once. An id already routed is replaced.
func (r *Router) PutAll(n int, shapes iter.Seq[Shape]) {
	// Shapes from the ledger share their filter maps: a definition is
	// looked up once per map, table and relation.
	type seen struct {
		filter uintptr
		table  string
		relID  uint32
	}
	defs := map[seen]*compiled{}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.shapes) == 0 && n > 0 {
		r.shapes = make(map[string]*entry, n)
	}
	for s := range shapes {
		k := seen{table: s.Table, relID: s.RelID}
		if len(s.Filter) > 0 {
			k.filter = reflect.ValueOf(s.Filter).Pointer()
		}
		c, ok := defs[k]
		if !ok {
			c = r.compiled(s, defKey(s.Table, s.RelID, filterKey(s.Filter)))
			defs[k] = c
		}
		r.removeLocked(s.ID)
		r.putCompiled(s, c)
	}
}

// Remove drops a shape; removing an unknown id does nothing.
func (r *Router) Remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(id)
}

func (r *Router) removeLocked(id string) {
	e, ok := r.shapes[id]
	if !ok {
		return
	}
	delete(r.shapes, id)
	if e.refs--; e.refs <= 0 {
		delete(r.filters, e.key)
	}
	t := r.tables[e.rel()]
	t.n--
	delete(t.unfiltered, e)
	if len(e.cols) > 0 {
		col := e.cols[0]
		ci := t.byCol[col]
		ci.n--
		delete(ci.none, e)
		for v := range e.sets[col] {
			delete(ci.byValue[v], e)
			if len(ci.byValue[v]) == 0 {
				delete(ci.byValue, v)
			}
		}
		if ci.n == 0 {
			delete(t.byCol, col)
		}
	}
	if t.n == 0 {
		delete(r.tables, e.rel())
	}
}

// Shape returns the shape with the given id.
func (r *Router) Shape(id string) (Shape, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.shapes[id]
	if !ok {
		return Shape{}, false
	}
	return e.shape(), true
}

// Bound returns the shapes bound to relation relID, ordered by id.
func (r *Router) Bound(relID uint32) []Shape {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t := r.tables[relKey{id: relID}]
	if t == nil {
		return nil
	}
	out := make([]Shape, 0, t.n)
	t.each(func(e *entry) { out = append(out, e.shape()) })
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Consumer returns the owner of a shape, or "" for an unknown shape.
func (r *Router) Consumer(id string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e, ok := r.shapes[id]; ok {
		return e.consumer
	}
	return ""
}

// IDs returns the ids of every routed shape, sorted.
func (r *Router) IDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := make([]string, 0, len(r.shapes))
	for id := range r.shapes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Len returns the number of routed shapes.
func (r *Router) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.shapes)
}

// Route returns the shapes each change of txn reaches and their union.
// A transaction that reaches no shape has an empty Result.Shapes.
//
// Its cost per change does not grow with the width of the filters: a
// filter's columns are looked up in a hashed map, and a filter wider than the
// row is checked by walking the row's columns against it (see matches).
func (r *Router) Route(txn *stream.Txn) Result {
	res := Result{Changes: make([][]string, len(txn.Changes))}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.tables) == 0 {
		return res
	}
	var probes uint64
	defer func() { r.probes.Add(probes) }()
	union := map[string]struct{}{}
	for i := range txn.Changes {
		ch := &txn.Changes[i]
		var ids, absent []string
		if ch.RelID != 0 {
			if t := r.tables[relKey{id: ch.RelID}]; t != nil {
				ids, absent = t.match(ch, &probes)
			}
		}
		if t := r.tables[relKey{name: ch.Table}]; t != nil {
			more, moreAbsent := t.match(ch, &probes)
			ids, absent = append(ids, more...), append(absent, moreAbsent...)
		}
		if len(ids) == 0 {
			continue
		}
		sort.Strings(ids)
		res.Changes[i] = ids
		if len(absent) > 0 {
			if res.Absent == nil {
				res.Absent = make([][]string, len(txn.Changes))
			}
			sort.Strings(absent)
			res.Absent[i] = absent
		}
		for _, id := range ids {
			union[id] = struct{}{}
		}
	}
	if len(union) > 0 {
		res.Shapes = make([]string, 0, len(union))
		for id := range union {
			res.Shapes = append(res.Shapes, id)
		}
		sort.Strings(res.Shapes)
	}
	return res
}

// match returns the ids of the table's shapes that the change reaches and,
// among them, those reached only through an absent filter column. probes
// counts the column comparisons made.
func (t *tableIndex) match(ch *stream.Change, probes *uint64) (ids, absent []string) {
	if ch.Op == stream.OpTruncate {
		ids := make([]string, 0, t.n)
		t.each(func(e *entry) { ids = append(ids, e.id) })
		return ids, nil
	}
	var buf [2]row
	tuples := buf[:0]
	switch ch.Op {
	case stream.OpInsert:
		tuples = append(tuples, row{cols: ch.New, probes: probes})
	case stream.OpDelete:
		tuples = append(tuples, row{cols: ch.Old, probes: probes})
	default: // update, and any op this version does not know: both rows
		tuples = append(tuples, row{cols: ch.New, probes: probes})
		if ch.Old != nil {
			tuples = append(tuples, row{cols: ch.Old, probes: probes})
		}
	}
	ids = make([]string, 0, len(t.unfiltered))
	for e := range t.unfiltered {
		ids = append(ids, e.id)
	}
	for col, ci := range t.byCol {
		seen := map[string]bool{} // matched shapes: true once a tuple held all their filter columns
		for i := range tuples {
			tup := &tuples[i]
			v, present := tup.lookup(col)
			try := func(e *entry) {
				if seen[e.id] {
					return
				}
				if ok, whole := e.matches(tup); ok {
					seen[e.id] = whole
				}
			}
			switch {
			case !present:
				ci.each(try) // every shape on the column may match
			case v.Kind != stream.KindNull: // NULL equals no listed value
				for e := range ci.byValue[v.Value] {
					try(e)
				}
			}
		}
		for id, whole := range seen {
			ids = append(ids, id)
			if !whole {
				absent = append(absent, id)
			}
		}
	}
	return ids, absent
}

// linearLookup is the widest row whose columns are found by a scan; a wider
// row gets a map from name to column the first time one is looked up.
const linearLookup = 8

// row is one tuple of a change being routed.
type row struct {
	cols   []stream.Column
	byName map[string]int // column index by name, built on first need for wide rows
	probes *uint64
}

// lookup finds a column by name. A column Postgres did not send (unchanged
// TOAST value) counts as absent.
func (r *row) lookup(name string) (stream.Column, bool) {
	i := -1
	if len(r.cols) <= linearLookup {
		for j := range r.cols {
			*r.probes++
			if r.cols[j].Name == name {
				i = j
				break
			}
		}
	} else {
		if r.byName == nil {
			r.byName = make(map[string]int, len(r.cols))
			for j := len(r.cols) - 1; j >= 0; j-- { // the first of duplicate names wins, as in a scan
				r.byName[r.cols[j].Name] = j
			}
		}
		*r.probes++
		if j, ok := r.byName[name]; ok {
			i = j
		}
	}
	if i < 0 || r.cols[i].Kind == stream.KindUnchanged {
		return stream.Column{}, false
	}
	return r.cols[i], true
}

// matches reports whether the tuple satisfies every filter column; absent
// columns match (over-delivery, never under-delivery: a key-only old tuple
// lacks the non-key columns, I1). whole is false when a filter column was
// absent, so the match may be an over-delivery. A filter with more columns
// than the row is checked by walking the row against the filter's column
// map, so a filter listing thousands of columns costs no more than the
// row's width; such a row always lacks a filter column.
func (e *entry) matches(tup *row) (ok, whole bool) {
	if len(e.cols) > len(tup.cols) {
		for _, c := range tup.cols {
			*tup.probes++
			set, ok := e.sets[c.Name]
			if !ok || c.Kind == stream.KindUnchanged {
				continue
			}
			if c.Kind == stream.KindNull {
				return false, false
			}
			if _, ok := set[c.Value]; !ok {
				return false, false
			}
		}
		return true, false
	}
	whole = true
	for _, col := range e.cols {
		v, present := tup.lookup(col)
		if !present {
			whole = false
			continue
		}
		if v.Kind == stream.KindNull {
			return false, false
		}
		if _, ok := e.sets[col][v.Value]; !ok {
			return false, false
		}
	}
	return true, whole
}

// filterKey is a filter's canonical form: its columns sorted, each with its
// values sorted.
func filterKey(f map[string][]string) string {
	if len(f) == 0 {
		return ""
	}
	cols := make([]string, 0, len(f))
	for c := range f {
		cols = append(cols, c)
	}
	sort.Strings(cols)
	var b []byte
	for _, c := range cols {
		vs := f[c]
		if !slices.IsSorted(vs) {
			vs = slices.Sorted(slices.Values(vs))
		}
		b = strconv.AppendInt(b, int64(len(c)), 10)
		b = append(b, ':')
		b = append(b, c...)
		b = strconv.AppendInt(b, int64(len(vs)), 10)
		for _, v := range vs {
			b = append(b, ',')
			b = strconv.AppendInt(b, int64(len(v)), 10)
			b = append(b, ':')
			b = append(b, v...)
		}
		b = append(b, ';')
	}
	return string(b)
}

func compile(f map[string][]string) *compiled {
	e := &compiled{sets: map[string]map[string]struct{}{}}
	for col, vals := range f {
		set := make(map[string]struct{}, len(vals))
		for _, v := range vals {
			set[v] = struct{}{}
		}
		e.sets[col] = set
		e.cols = append(e.cols, col)
	}
	slices.Sort(e.cols)
	// Index on the most selective column: the one allowing the fewest values.
	slices.SortStableFunc(e.cols, func(a, b string) int { return len(e.sets[a]) - len(e.sets[b]) })
	return e
}
