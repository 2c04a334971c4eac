package route

import (
	"iter"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/ledgerd/ledgerd/internal/idmap"
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
	// Def is the shape's definition as the ledger holds it; the router
	// indexes it instead of a copy. A Shape without one (built by hand)
	// gets one made of Table, RelID and Filter. The shapes the router
	// returns carry Def and leave Filter nil: the hub compares a million
	// of them with the ledger's after a burst of changes, and a map each
	// would be garbage.
	Def *ledger.Def
}

// relKey indexes shapes by relation identity: the OID for bound shapes,
// the table name for shapes not bound yet.
type relKey struct {
	id   uint32
	name string
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

// entry is an indexed shape: 64 bytes, its definition the ledger's own.
// Most filters are one column allowing one value: such a shape is in the
// list of that value (columnIndex.heads), linked through prev and next, so
// a million distinct filters cost one map entry each in the index.
type entry struct {
	id, consumer string
	boundAt      ledger.LSN
	def          *ledger.Def
	prev, next   *entry
}

func entryID(e *entry) string { return e.id }

func (e *entry) shape() Shape {
	return Shape{ID: e.id, Consumer: e.consumer, Table: e.def.Table(), RelID: e.def.RelID(), BoundAt: e.boundAt, Def: e.def}
}

// rel is the index key of the shape's relation.
func (e *entry) rel() relKey {
	if id := e.def.RelID(); id != 0 {
		return relKey{id: id}
	}
	return relKey{name: e.def.Table()}
}

// compiled is a filter of several columns, or of one column allowing many
// values, compiled to sets. Shapes sharing a definition share one
// (Router.compiled). A filter of one column allowing a few values, the
// common case, is read from its definition as it is.
type compiled struct {
	cols []string                       // filter columns, most selective first
	sets map[string]map[string]struct{} // column -> allowed values
	refs int                            // entries using it
}

// simpleValues is the most values a one-column filter is matched against
// by a scan of its definition rather than compiled to a set.
const simpleValues = 8

// needsCompile reports whether a definition's filter is compiled.
func needsCompile(d *ledger.Def) bool {
	if len(d.Columns()) > 1 {
		return true
	}
	for _, vals := range d.Each() {
		return vals.Len() > simpleValues
	}
	return false
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
	n     int               // shapes indexed on this column
	heads *idmap.Map[entry] // the first shape of the list of each value, keyed by it (onlyValue)
	multi map[string]set    // value -> shapes of a compiled filter, or allowing the value among others (nil until one does)
	none  set               // shapes allowing no value of it (nil until one does)
}

// each calls f with every shape indexed on the column, once each.
func (ci *columnIndex) each(f func(*entry)) {
	for e := range ci.heads.All() {
		for ; e != nil; e = e.next {
			f(e)
		}
	}
	if len(ci.multi) > 0 {
		seen := make(set)
		for _, m := range ci.multi {
			for e := range m {
				if _, ok := seen[e]; !ok {
					seen[e] = struct{}{}
					f(e)
				}
			}
		}
	}
	for e := range ci.none {
		f(e)
	}
}

// with calls f with every shape indexed on the column that allows v.
func (ci *columnIndex) with(v string, f func(*entry)) {
	for e := ci.heads.Get(v); e != nil; e = e.next {
		f(e)
	}
	for e := range ci.multi[v] {
		f(e)
	}
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
	mu       sync.RWMutex
	shapes   *idmap.Map[entry]         // by id
	compiled map[*ledger.Def]*compiled // the filters that are compiled (needsCompile)
	bound    map[uint32]*tableIndex    // shapes bound to a relation, by OID
	named    map[string]*tableIndex    // shapes not bound yet, by table name
	probes   atomic.Uint64             // column comparisons made by Route, for tests and benchmarks
}

// New returns an empty router.
func New() *Router {
	return &Router{shapes: idmap.New(entryID, 0), compiled: map[*ledger.Def]*compiled{},
		bound: map[uint32]*tableIndex{}, named: map[string]*tableIndex{}}
}

// table returns the index of the relation k, nil if it has no shape.
func (r *Router) table(k relKey) *tableIndex {
	if k.id != 0 {
		return r.bound[k.id]
	}
	return r.named[k.name]
}

func (r *Router) setTable(k relKey, t *tableIndex) {
	if k.id != 0 {
		r.bound[k.id] = t
	} else {
		r.named[k.name] = t
	}
}

func (r *Router) deleteTable(k relKey) {
	if k.id != 0 {
		delete(r.bound, k.id)
	} else {
		delete(r.named, k.name)
	}
}

// Put adds a shape or replaces the one with the same id.
func (r *Router) Put(s Shape) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.putLocked(s)
}

func (r *Router) putLocked(s Shape) {
	e := newEntry(s)
	if old := r.shapes.Put(e); old != nil {
		r.unindex(old)
	}
	r.index(e)
}

func newEntry(s Shape) *entry {
	d := s.Def
	if d == nil {
		d = ledger.NewDef(s.Table, s.RelID, s.Filter)
	}
	return &entry{id: s.ID, consumer: s.Consumer, boundAt: s.BoundAt, def: d}
}

// index adds e, in Router.shapes already, to the index of its table.
func (r *Router) index(e *entry) {
	d := e.def
	k := e.rel()
	t := r.table(k)
	if t == nil {
		t = &tableIndex{unfiltered: set{}, byCol: map[string]*columnIndex{}}
		r.setTable(k, t)
	}
	t.n++
	if !d.Filtered() {
		t.unfiltered[e] = struct{}{}
		return
	}
	col, vals, comp := r.first(e, true)
	ci := t.byCol[col]
	if ci == nil {
		ci = &columnIndex{heads: idmap.New(onlyValue, 0)}
		t.byCol[col] = ci
	}
	ci.n++
	switch {
	case len(vals) == 0:
		if ci.none == nil {
			ci.none = set{}
		}
		ci.none[e] = struct{}{}
	case len(vals) == 1 && !comp:
		if h := ci.heads.Put(e); h != nil {
			e.next, h.prev = h, e
		}
	default:
		if ci.multi == nil {
			ci.multi = map[string]set{}
		}
		for _, v := range vals {
			m := ci.multi[v]
			if m == nil {
				m = set{}
				ci.multi[v] = m
			}
			m[e] = struct{}{}
		}
	}
}

// onlyValue is the value a shape in a value list allows: the one value of
// its filter's one column.
func onlyValue(e *entry) string {
	_, v, _ := e.def.Only()
	return v
}

// first returns the column a filtered shape is indexed on, the values it
// allows and whether its filter is compiled; with add, a compiled filter
// gets a reference.
func (r *Router) first(e *entry, add bool) (string, []string, bool) {
	var buf [1]string
	if col, v, ok := e.def.Only(); ok {
		buf[0] = v
		return col, buf[:], false
	}
	if !needsCompile(e.def) {
		for col, vals := range e.def.Each() {
			if vals.Len() == 1 {
				buf[0] = onlyValue(e)
				return col, buf[:], false
			}
			return col, slices.Collect(vals.All()), false
		}
	}
	c := r.compiled[e.def]
	if c == nil {
		c = compile(e.def)
		r.compiled[e.def] = c
	}
	if add {
		c.refs++
	}
	col := c.cols[0]
	return col, slices.Collect(maps.Keys(c.sets[col])), true
}

// PutAll adds shapes under one lock, as at start. An id already routed is
// replaced.
//
// Filling an empty router, as at start, takes two cores: the entries are
// made and put in Router.shapes here while another goroutine indexes them,
// in the same order (the two touch disjoint parts of the router). With a
// million shapes that takes a fifth of a second off a start.
func (r *Router) PutAll(n int, shapes iter.Seq[Shape]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.shapes.Len() != 0 {
		for s := range shapes {
			r.putLocked(s)
		}
		return
	}
	if n > 0 {
		r.shapes = idmap.New(entryID, n)
	}
	type put struct{ e, old *entry } // old: the entry of the same id put before
	const run = 1024
	runs := make(chan []put, 4)
	indexed := make(chan struct{})
	go func() {
		defer close(indexed)
		for ps := range runs {
			for _, p := range ps {
				if p.old != nil {
					r.unindex(p.old)
				}
				r.index(p.e)
			}
		}
	}()
	defer func() {
		close(runs)
		<-indexed
	}()
	ps := make([]put, 0, run)
	for s := range shapes {
		e := newEntry(s)
		ps = append(ps, put{e: e, old: r.shapes.Put(e)})
		if len(ps) == run {
			runs <- ps
			ps = make([]put, 0, run)
		}
	}
	if len(ps) > 0 {
		runs <- ps
	}
}

// Remove drops a shape; removing an unknown id does nothing.
func (r *Router) Remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(id)
}

func (r *Router) removeLocked(id string) {
	if e := r.shapes.Delete(id); e != nil {
		r.unindex(e)
	}
}

// unindex drops e, no longer in Router.shapes, from the index.
func (r *Router) unindex(e *entry) {
	k := e.rel()
	t := r.table(k)
	t.n--
	if !e.def.Filtered() {
		delete(t.unfiltered, e)
	} else {
		col, vals, comp := r.first(e, false)
		if c := r.compiled[e.def]; c != nil {
			if c.refs--; c.refs <= 0 {
				delete(r.compiled, e.def)
			}
		}
		ci := t.byCol[col]
		ci.n--
		switch {
		case len(vals) == 0:
			delete(ci.none, e)
		case len(vals) == 1 && !comp:
			if e.prev != nil {
				e.prev.next = e.next
			} else if e.next != nil {
				ci.heads.Put(e.next)
			} else {
				ci.heads.Delete(vals[0])
			}
			if e.next != nil {
				e.next.prev = e.prev
			}
			e.prev, e.next = nil, nil
		default:
			for _, v := range vals {
				delete(ci.multi[v], e)
				if len(ci.multi[v]) == 0 {
					delete(ci.multi, v)
				}
			}
		}
		if ci.n == 0 {
			delete(t.byCol, col)
		}
	}
	if t.n == 0 {
		r.deleteTable(k)
	}
}

// Shape returns the shape with the given id.
func (r *Router) Shape(id string) (Shape, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.shapes.Get(id)
	if e == nil {
		return Shape{}, false
	}
	return e.shape(), true
}

// Bound returns the shapes bound to relation relID, ordered by id.
func (r *Router) Bound(relID uint32) []Shape {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t := r.bound[relID]
	if t == nil {
		return nil
	}
	out := make([]Shape, 0, t.n)
	t.each(func(e *entry) { out = append(out, e.shape()) })
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Misfits returns the shapes bound to relation relID that a relation
// message describing it as table with columns no longer fits: bound under
// another table name, or filtering on a column it lacks. Ordered by id.
// Unlike Bound it copies only those: after a start every table's first
// transaction carries a relation message, and a table may hold hundreds of
// thousands of shapes that all still fit.
func (r *Router) Misfits(relID uint32, table string, columns []string) []Shape {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t := r.bound[relID]
	if t == nil {
		return nil
	}
	var out []Shape
	var last *ledger.Def // shapes sharing a definition are judged once
	lastFits := false
	t.each(func(e *entry) {
		if e.def != last {
			last, lastFits = e.def, fits(e.def, table, columns)
		}
		if !lastFits {
			out = append(out, e.shape())
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// fits reports whether a relation named table with columns still serves
// the definition: same name, and every column its filter names.
func fits(d *ledger.Def, table string, columns []string) bool {
	if d.Table() != table {
		return false
	}
	for _, col := range d.Columns() {
		if !slices.Contains(columns, col) {
			return false
		}
	}
	return true
}

// Consumer returns the owner of a shape, or "" for an unknown shape.
func (r *Router) Consumer(id string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.shapes.Get(id); e != nil {
		return e.consumer
	}
	return ""
}

// IDs returns the ids of every routed shape, sorted.
func (r *Router) IDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := make([]string, 0, r.shapes.Len())
	for e := range r.shapes.All() {
		ids = append(ids, e.id)
	}
	sort.Strings(ids)
	return ids
}

// Len returns the number of routed shapes.
func (r *Router) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.shapes.Len()
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
	if len(r.bound) == 0 && len(r.named) == 0 {
		return res
	}
	var probes uint64
	defer func() { r.probes.Add(probes) }()
	union := map[string]struct{}{}
	for i := range txn.Changes {
		ch := &txn.Changes[i]
		var ids, absent []string
		if ch.RelID != 0 {
			if t := r.bound[ch.RelID]; t != nil {
				ids, absent = t.match(ch, r.compiled, &probes)
			}
		}
		if t := r.named[ch.Table]; t != nil {
			more, moreAbsent := t.match(ch, r.compiled, &probes)
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
func (t *tableIndex) match(ch *stream.Change, comp map[*ledger.Def]*compiled, probes *uint64) (ids, absent []string) {
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
				if ok, whole := e.matches(tup, comp); ok {
					seen[e.id] = whole
				}
			}
			switch {
			case !present:
				ci.each(try) // every shape on the column may match
			case v.Kind != stream.KindNull: // NULL equals no listed value
				ci.with(v.Value, try)
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

// value reads a one-column filter's column from the tuple. decided is true
// when the answer does not depend on the filter's values: an absent column
// matches (ok), a NULL matches nothing.
func (r *row) value(col string) (v string, decided, ok bool) {
	c, present := r.lookup(col)
	switch {
	case !present:
		return "", true, true
	case c.Kind == stream.KindNull:
		return "", true, false
	}
	return c.Value, false, false
}

// matches reports whether the tuple satisfies every filter column; absent
// columns match (over-delivery, never under-delivery: a key-only old tuple
// lacks the non-key columns, I1). whole is false when a filter column was
// absent, so the match may be an over-delivery. A filter with more columns
// than the row is checked by walking the row against the filter's column
// map, so a filter listing thousands of columns costs no more than the
// row's width; such a row always lacks a filter column.
func (e *entry) matches(tup *row, comp map[*ledger.Def]*compiled) (ok, whole bool) {
	if col, val, only := e.def.Only(); only {
		v, decided, ok := tup.value(col)
		if decided {
			return ok, false
		}
		return v == val, true
	}
	c := comp[e.def]
	if c == nil { // one column, a few values: read from the definition
		for col, vals := range e.def.Each() {
			v, decided, ok := tup.value(col)
			if decided {
				return ok, false
			}
			return vals.Contains(v), true
		}
		return true, true
	}
	if len(c.cols) > len(tup.cols) {
		for _, col := range tup.cols {
			*tup.probes++
			set, ok := c.sets[col.Name]
			if !ok || col.Kind == stream.KindUnchanged {
				continue
			}
			if col.Kind == stream.KindNull {
				return false, false
			}
			if _, ok := set[col.Value]; !ok {
				return false, false
			}
		}
		return true, false
	}
	whole = true
	for _, col := range c.cols {
		v, present := tup.lookup(col)
		if !present {
			whole = false
			continue
		}
		if v.Kind == stream.KindNull {
			return false, false
		}
		if _, ok := c.sets[col][v.Value]; !ok {
			return false, false
		}
	}
	return true, whole
}

// compile compiles a definition's filter to sets.
func compile(d *ledger.Def) *compiled {
	c := &compiled{sets: map[string]map[string]struct{}{}}
	for col, vals := range d.Each() {
		set := make(map[string]struct{}, vals.Len())
		for v := range vals.All() {
			set[v] = struct{}{}
		}
		c.sets[col] = set
		c.cols = append(c.cols, col)
	}
	// Index on the most selective column: the one allowing the fewest
	// values (the columns come sorted, and the sort is stable).
	slices.SortStableFunc(c.cols, func(a, b string) int { return len(c.sets[a]) - len(c.sets[b]) })
	return c
}
