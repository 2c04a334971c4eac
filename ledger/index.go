package ledger

import (
	"container/heap"
	"slices"
	"strings"
	"time"
)

// Indexes that let the reconciler and the hub do work proportional to what
// changed instead of copying every shape each pass: the shapes of each owner
// (an intrusive list, 16 bytes a shape), the shapes of each relation, the
// consumers' lease ends in a min-heap (after etcd's lessor) and a change
// feed of consumers and shapes. All are guarded by Ledger.mu.

// owned is the list of the shapes one consumer id owns.
type owned struct {
	head *shapeState
	n    int
	// unflushed holds the shapes sent a transaction they have not acked
	// (lastSent > flushed): what an ack of every shape can move, found
	// without walking the owner's other shapes (AckAllOf).
	unflushed map[*shapeState]struct{}
}

// relUse counts the definitions of the live shapes bound to one relation
// under one table name (the interner holds them): the catalog check judges
// a table once, not each of its shapes, and a definition's shapes are
// counted by its refs.
type relUse struct {
	key    relKey
	defs   int            // definitions with live shapes
	cols   map[string]int // filter column -> definitions naming it
	sets   map[string]int // filter column set (colSet.key) -> shapes with it
	shapes int
}

type relKey struct {
	id    uint32
	table string
}

// index adds a shape to its owner's list and its relation's count.
func (t *tracker) index(s *shapeState) {
	o := t.owners[s.consumer]
	if o == nil {
		o = &owned{}
		t.owners[s.consumer] = o
	}
	s.prev, s.next = nil, o.head
	if o.head != nil {
		o.head.prev = s
	}
	o.head = s
	o.n++
	if s.lastSent > s.flushed {
		o.markUnflushed(s)
	}
	t.indexRel(s)
}

func (t *tracker) unindex(s *shapeState) {
	if o := t.owners[s.consumer]; o != nil {
		if s.prev != nil {
			s.prev.next = s.next
		} else if o.head == s {
			o.head = s.next
		}
		if s.next != nil {
			s.next.prev = s.prev
		}
		s.prev, s.next = nil, nil
		delete(o.unflushed, s)
		if o.n--; o.n <= 0 {
			delete(t.owners, s.consumer)
		}
	}
	t.unindexRel(s)
}

// indexRel counts the shape on its relation, and its definition's filter
// columns with the first shape of that definition, so that Relations costs
// one look at each relation's columns whatever the number of shapes or
// distinct filters.
func (t *tracker) indexRel(s *shapeState) {
	k := relKey{s.relID, s.table}
	u := t.lastRel
	if u == nil || u.key != k {
		if u = t.rels[k]; u == nil {
			u = &relUse{key: k, cols: map[string]int{}, sets: map[string]int{}}
			t.rels[k] = u
		}
		t.lastRel = u
	}
	u.shapes++
	if s.cols != nil {
		u.sets[s.cols.key]++
	}
	if s.refs++; s.refs > 1 {
		return
	}
	u.defs++
	for _, c := range s.Columns() {
		u.cols[c]++
	}
}

func (t *tracker) unindexRel(s *shapeState) {
	k := relKey{s.relID, s.table}
	u := t.rels[k]
	if u != nil {
		u.shapes--
		if s.cols != nil {
			if u.sets[s.cols.key]--; u.sets[s.cols.key] <= 0 {
				delete(u.sets, s.cols.key)
			}
		}
	}
	if s.refs--; s.refs > 0 {
		return
	}
	t.defs.release(s.Def)
	if u == nil {
		return
	}
	u.defs--
	for _, c := range s.Columns() {
		if u.cols[c]--; u.cols[c] <= 0 {
			delete(u.cols, c)
		}
	}
	if u.defs <= 0 {
		delete(t.rels, k)
		if t.lastRel == u {
			t.lastRel = nil
		}
	}
}

// ShapesOf returns the live shapes the consumer id owns, ordered by id.
func (l *Ledger) ShapesOf(consumer string) []Shape {
	l.mu.Lock()
	o := l.t.owners[consumer]
	var out []Shape
	if o != nil {
		out = make([]Shape, 0, o.n)
		for s := o.head; s != nil; s = s.next {
			out = append(out, l.shapeView(s))
		}
	}
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b Shape) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func (o *owned) markUnflushed(s *shapeState) {
	if o.unflushed == nil {
		o.unflushed = map[*shapeState]struct{}{}
	}
	o.unflushed[s] = struct{}{}
}

// sent notes that s was sent a transaction past its flushed position.
func (t *tracker) sent(s *shapeState) {
	if o := t.owners[s.consumer]; o != nil {
		o.markUnflushed(s)
	}
}

// flushedAll notes that s acked everything it was sent.
func (t *tracker) flushedAll(s *shapeState) {
	if o := t.owners[s.consumer]; o != nil {
		delete(o.unflushed, s)
	}
}

// AckAllOf is what an ack of lsn for every shape the consumer owns would
// apply: for each shape sent something it has not flushed, its id and the
// position to ack (lsn, or the last transaction sent to it if that is
// lower), ordered by id. It looks only at those shapes, not at every shape
// the consumer owns: an ack costs what the shapes it moves cost.
func (l *Ledger) AckAllOf(consumer string, lsn LSN) []ShapeAck {
	var acks []ShapeAck
	l.mu.Lock()
	if o := l.t.owners[consumer]; o != nil {
		for s := range o.unflushed {
			if a := min(lsn, s.lastSent); a > s.flushed {
				acks = append(acks, ShapeAck{ID: s.id, LSN: a})
			}
		}
	}
	l.mu.Unlock()
	slices.SortFunc(acks, func(a, b ShapeAck) int { return strings.Compare(a.ID, b.ID) })
	return acks
}

// FlushedBelow reports whether any shape the consumer owns is flushed below
// lsn: an ack of lsn for all of them would then claim lsn. It walks every
// shape of the consumer; an ack past what was delivered asks it.
func (l *Ledger) FlushedBelow(consumer string, lsn LSN) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o := l.t.owners[consumer]; o != nil {
		for s := o.head; s != nil; s = s.next {
			if s.flushed < lsn {
				return true
			}
		}
	}
	return false
}

// ShapeAck is one shape's ack position (AckAllOf).
type ShapeAck struct {
	ID  string
	LSN LSN
}

// LiveShapes returns the number of live shapes.
func (l *Ledger) LiveShapes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t.shapes.Len()
}

// Owners returns the ids of every consumer and of every owner of a live
// shape (an owner without a consumer record is unknown to the ledger), sorted.
func (l *Ledger) Owners() []string {
	l.mu.Lock()
	out := make([]string, 0, len(l.consumers)+1)
	for id := range l.consumers {
		out = append(out, id)
	}
	for id := range l.t.owners {
		if _, ok := l.consumers[id]; !ok {
			out = append(out, id)
		}
	}
	l.mu.Unlock()
	slices.Sort(out)
	return out
}

// RelationUse is a relation (or, with RelID 0, a table name not bound to a
// relation yet) that live shapes are on: how many, and the filter columns
// they name.
type RelationUse struct {
	RelID   uint32
	Table   string
	Columns []string // sorted
	Shapes  int
	// Filters counts the shapes by the set of columns they filter on,
	// ordered by columns; shapes without a filter are left out.
	Filters []FilterUse
}

// FilterUse is how many shapes of a relation filter on exactly Columns.
type FilterUse struct {
	Columns []string // sorted
	Shapes  int
}

// Relations returns the relations live shapes are on, ordered by relation
// and table. It costs one look at each relation's filter columns, whatever
// the number of shapes or of distinct filters: the reconciler's catalog
// check calls it every pass.
func (l *Ledger) Relations() []RelationUse {
	l.mu.Lock()
	out := make([]RelationUse, 0, len(l.t.rels))
	for k, u := range l.t.rels {
		cols := make([]string, 0, len(u.cols))
		for c := range u.cols {
			cols = append(cols, c)
		}
		slices.Sort(cols)
		var fs []FilterUse
		for set, n := range u.sets {
			fs = append(fs, FilterUse{Columns: strings.Split(set, "\x00"), Shapes: n})
		}
		slices.SortFunc(fs, func(a, b FilterUse) int { return slices.Compare(a.Columns, b.Columns) })
		out = append(out, RelationUse{RelID: k.id, Table: k.table, Columns: cols, Shapes: u.shapes, Filters: fs})
	}
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b RelationUse) int {
		if a.RelID != b.RelID {
			return int(int64(a.RelID) - int64(b.RelID))
		}
		return strings.Compare(a.Table, b.Table)
	})
	return out
}

// ShapesOn returns the live shapes bound to relation relID under the table
// name (relID 0: the shapes of the table not bound yet), ordered by id. It
// looks at every shape: the catalog check calls it only for a relation that
// changed.
func (l *Ledger) ShapesOn(relID uint32, table string) []Shape {
	l.mu.Lock()
	var out []Shape
	for s := range l.t.shapes.All() {
		if s.relID == relID && s.table == table {
			out = append(out, l.shapeView(s))
		}
	}
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b Shape) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// ---- lease ends

// leaseChanged puts c where its lease end belongs in the lease heap: a
// consumer whose lease can run out (not gone, no open stream) is in it.
// Caller holds mu, after any change of c's lease, stream or end.
func (l *Ledger) leaseChanged(c *Consumer) {
	in := c.leaseIdx > 0 && c.leaseIdx <= len(l.leases) && l.leases[c.leaseIdx-1] == c
	want := !c.Gone && !c.Streaming && l.consumers[c.ID] == c
	switch {
	case in && !want:
		heap.Remove(&l.leases, c.leaseIdx-1)
	case in:
		heap.Fix(&l.leases, c.leaseIdx-1)
	case want:
		heap.Push(&l.leases, c)
	default:
		c.leaseIdx = 0
	}
}

// leaseHeap orders consumers by lease end for container/heap and keeps
// each one's leaseIdx (1 + its position) as it moves.
type leaseHeap []*Consumer

func (h leaseHeap) Len() int           { return len(h) }
func (h leaseHeap) Less(i, j int) bool { return h[i].leaseEnd < h[j].leaseEnd }
func (h leaseHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].leaseIdx, h[j].leaseIdx = i+1, j+1
}

func (h *leaseHeap) Push(x any) {
	c := x.(*Consumer)
	*h = append(*h, c)
	c.leaseIdx = len(*h)
}

func (h *leaseHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.leaseIdx = 0
	return c
}

// ExpiredConsumers returns the consumers whose lease has run out and that
// the reconciler has not ended yet (no open stream, not gone), ordered by
// id. It visits only them: the lease ends are kept in a min-heap, so a
// million live leases cost nothing here (I3).
func (l *Ledger) ExpiredConsumers() []Consumer {
	l.mu.Lock()
	now := l.mono()
	var out []Consumer
	var walk func(i int)
	walk = func(i int) {
		if i >= len(l.leases) || l.leases[i].leaseEnd > now {
			return
		}
		out = append(out, l.view(l.leases[i]))
		walk(2*i + 1)
		walk(2*i + 2)
	}
	walk(0)
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b Consumer) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// ---- pending shapes in order

// PendingSince returns the pending shapes whose oldest unacked transaction
// was handed to them at or before t, smallest pending LSN first. It walks
// the tracker's heap in order and stops at the first younger one: a shape's
// transactions are tracked in commit order, so PendingSince rises with the
// pending LSN.
func (l *Ledger) PendingSince(t time.Time) []Shape {
	cut := t.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Shape
	l.t.inOrder(func(s *shapeState) bool {
		if s.firstPending().at > cut {
			return false
		}
		out = append(out, l.shapeView(s))
		return true
	})
	return out
}

// PendingBelow returns the pending shapes whose smallest pending LSN is
// below lsn, smallest first. It visits only them.
func (l *Ledger) PendingBelow(lsn LSN) []Shape {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Shape
	l.t.inOrder(func(s *shapeState) bool {
		if s.firstPending().lsn >= lsn {
			return false
		}
		out = append(out, l.shapeView(s))
		return true
	})
	return out
}

// inOrder calls f with the pending shapes, smallest first pending LSN
// first, until f returns false. Each step costs O(log n).
func (t *tracker) inOrder(f func(*shapeState) bool) {
	if len(t.heap) == 0 {
		return
	}
	cand := []int32{0}
	less := func(a, b int32) bool { return t.less(int(a), int(b)) }
	for len(cand) > 0 {
		i := cand[0]
		last := len(cand) - 1
		cand[0] = cand[last]
		cand = cand[:last]
		siftDown32(cand, 0, less)
		if !f(t.heap[i]) {
			return
		}
		for _, c := range [2]int32{2*i + 1, 2*i + 2} {
			if int(c) < len(t.heap) {
				cand = append(cand, c)
				siftUp32(cand, len(cand)-1, less)
			}
		}
	}
}

// ---- change feed

// maxWatched bounds the ids a Watch remembers between two drains; past it
// the watch forgets them and reports everything changed.
const maxWatched = 1 << 16

// Watch is a change feed of the ledger's consumers and shapes: the ids of
// those registered, renewed, streaming, ended, created, bound or evicted
// since the last Drain. It lets a reader keep a view of the ledger up to
// date by looking only at what changed.
type Watch struct {
	l         *Ledger
	noShapes  bool // consumers only
	all       bool
	consumers map[string]struct{}
	shapes    map[string]struct{}
}

// Changes is what a Watch saw between two drains. With All set, the ids are
// not known: anything may have changed (the first drain, or more changes
// than a Watch remembers).
type Changes struct {
	All       bool
	Consumers []string // sorted
	Shapes    []string // sorted
}

// Watch starts a change feed of consumers and shapes. Its first Drain
// reports All.
func (l *Ledger) Watch() *Watch { return l.watch(false) }

// WatchConsumers starts a change feed of consumers only: creating a million
// shapes does not fill it.
func (l *Ledger) WatchConsumers() *Watch { return l.watch(true) }

func (l *Ledger) watch(noShapes bool) *Watch {
	w := &Watch{l: l, noShapes: noShapes, all: true, consumers: map[string]struct{}{}, shapes: map[string]struct{}{}}
	l.mu.Lock()
	l.watches = append(l.watches, w)
	l.mu.Unlock()
	return w
}

// Drain returns what changed since the last Drain and starts afresh.
func (w *Watch) Drain() Changes {
	w.l.mu.Lock()
	ch := Changes{All: w.all}
	if !w.all {
		ch.Consumers = sortedSet(w.consumers)
		ch.Shapes = sortedSet(w.shapes)
	}
	w.all = false
	clear(w.consumers)
	clear(w.shapes)
	w.l.mu.Unlock()
	return ch
}

func sortedSet(m map[string]struct{}) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (w *Watch) mark(set map[string]struct{}, id string) {
	if w.all {
		return
	}
	if len(w.consumers)+len(w.shapes) >= maxWatched {
		w.all = true
		clear(w.consumers)
		clear(w.shapes)
		return
	}
	set[id] = struct{}{}
}

// consumerChanged records a change of consumer c: the lease heap and every
// watch. Caller holds mu.
func (l *Ledger) consumerChanged(c *Consumer) {
	l.leaseChanged(c)
	for _, w := range l.watches {
		w.mark(w.consumers, c.ID)
	}
}

// shapeChanged records that a shape was created, bound or evicted. Caller
// holds mu.
func (l *Ledger) shapeChanged(id string) {
	for _, w := range l.watches {
		if !w.noShapes {
			w.mark(w.shapes, id)
		}
	}
}

// ShapeSpecs returns the definitions of every live shape, in no order. It
// builds no filter map (Filter is nil: read Def) and sorts nothing: it is
// what a reader that builds its own index of a million shapes at start
// needs.
func (l *Ledger) ShapeSpecs() []ShapeSpec {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ShapeSpec, 0, l.t.shapes.Len())
	for s := range l.t.shapes.All() {
		out = append(out, ShapeSpec{ID: s.id, Consumer: s.consumer, Table: s.table, RelID: s.relID, BoundAt: s.boundAt, Def: s.Def})
	}
	return out
}

// EachShapeSpec calls f with the definition of every live shape, in no
// order, until f returns false, as ShapeSpecs returns them, without
// copying them into a slice: at start, a million of them would be 80 MB of
// garbage. f runs under the ledger's lock: it must not call the Ledger,
// and it holds up every ack while it runs. The shapes come owner by
// owner: those read from the file together lie together in memory, and
// mostly share a table.
func (l *Ledger) EachShapeSpec(f func(ShapeSpec) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.t.owners {
		for s := o.head; s != nil; s = s.next {
			if !f(ShapeSpec{ID: s.id, Consumer: s.consumer, Table: s.table, RelID: s.relID, BoundAt: s.boundAt, Def: s.Def}) {
				return
			}
		}
	}
}

// ShapesNotIn returns the live shapes of the consumer created before
// createdBefore whose ids held does not list, ordered by id: what a
// heartbeat's shape list leaves out. Only those are copied out, so judging
// a list of a thousand shapes costs a walk of the owner's list.
func (l *Ledger) ShapesNotIn(consumer string, held []string, createdBefore time.Time) []Shape {
	set := make(map[string]struct{}, len(held))
	for _, id := range held {
		set[id] = struct{}{}
	}
	before := createdBefore.UnixNano()
	l.mu.Lock()
	var out []Shape
	if o := l.t.owners[consumer]; o != nil {
		for s := o.head; s != nil; s = s.next {
			if _, ok := set[s.id]; ok || s.created >= before {
				continue
			}
			out = append(out, l.shapeView(s))
		}
	}
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b Shape) int { return strings.Compare(a.ID, b.ID) })
	return out
}
