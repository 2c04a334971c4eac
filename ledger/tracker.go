package ledger

import (
	"strings"

	"github.com/ledgerd/ledgerd/internal/idmap"
)

// The tracker is the in-memory half of the ledger: for every live shape a FIFO
// of the commit LSNs handed to it and not yet acked, and an indexed min-heap of
// the shapes that have any, keyed by their oldest pending commit LSN. The heap
// gives the minimum pending position in O(1) and keeps it in O(log n) per
// Track or Ack, which is what lets the safe flush LSN be recomputed on every
// ack for a million shapes.
//
// The tracker does no locking and no I/O; the Ledger guards it with its mutex.

// pendEntry is one transaction handed to a shape and not yet acked.
type pendEntry struct {
	lsn LSN   // commit LSN
	at  int64 // unix nanoseconds when it was tracked (PendingSince)
}

// shapeState is a live shape: its durable record and its tracking state.
// It is kept small on purpose, 128 bytes (a size class of the allocator):
// a million of them must fit in a few hundred megabytes.
type shapeState struct {
	id       string
	consumer string // interned: the owner's id
	*Def

	gen      uint64
	start    LSN
	flushed  LSN // in memory; durable once the batch that carries it commits
	lastSent LSN
	created  int64 // unix nanoseconds
	lastAck  int64 // unix nanoseconds

	q       *pendQueue // nil until something is handed to it
	heapIdx int32      // position in tracker.heap, -1 when nothing is pending
	dirty   uint32     // tag of the group-commit batch that carries its flushed LSN (batch.tag), 0 if none

	boundAt LSN // WAL position of the relation binding (ShapeSpec.BoundAt)

	prev, next *shapeState // the owner's other shapes (tracker.owners)
}

// interner deduplicates strings, filter column sets and definitions. A
// definition is looked up by its relation and its canonical filter, which
// it holds itself: a million distinct definitions cost one map entry each
// and no copy of their key.
type interner struct {
	strs map[string]string
	cols map[string]*colSet
	defs map[relKey]*idmap.Map[Def] // by relation, then canonical filter
	buf  []byte

	// The relation and strings looked up last: a file read in key order
	// holds a consumer's shapes together, mostly on a few tables.
	lastRel  relKey
	lastDefs *idmap.Map[Def]
	last     [2]string

	// made collects the definitions def makes while collect is set
	// (PutShapes, for pack).
	made    []*Def
	collect bool
}

func newInterner() *interner {
	return &interner{strs: make(map[string]string), cols: make(map[string]*colSet), defs: make(map[relKey]*idmap.Map[Def])}
}

func (in *interner) str(b []byte) string {
	for _, s := range in.last {
		if s == string(b) && s != "" {
			return s
		}
	}
	if s, ok := in.strs[string(b)]; ok {
		in.last[1], in.last[0] = in.last[0], s
		return s
	}
	s := string(b)
	in.strs[s] = s
	in.last[1], in.last[0] = in.last[0], s
	return s
}

func filterOf(d *Def) string { return d.filter }

// def returns the interned definition of table, relID and the canonical
// filter (canonFilter's, or a record's), made if new.
func (in *interner) def(table string, relID uint32, filter string) *Def {
	return in.defOf(table, relID, filter, nil)
}

// defBytes is def of a filter read from a record: only a definition not
// seen before copies it.
func (in *interner) defBytes(table string, relID uint32, filter []byte) *Def {
	return in.defOf(table, relID, "", filter)
}

// defOf is def of filter, or of raw when raw is not nil.
func (in *interner) defOf(table string, relID uint32, filter string, raw []byte) *Def {
	k := relKey{relID, table}
	m := in.lastDefs
	if m == nil || in.lastRel != k {
		if m = in.defs[k]; m == nil {
			m = idmap.New(filterOf, 0)
			in.defs[k] = m
		}
		in.lastRel, in.lastDefs = k, m
	}
	if raw != nil {
		if d := m.GetBytes(raw); d != nil {
			return d
		}
		filter = string(raw)
	} else if d := m.Get(filter); d != nil {
		return d
	}
	d := &Def{table: in.str([]byte(table)), relID: relID, filter: filter}
	if filter != "" {
		d.cols = in.colSet(d)
	}
	m.Put(d)
	if in.collect {
		in.made = append(in.made, d)
	}
	return d
}

// pack copies the ids of shapes created together, and the filters of the
// definitions made for them (made), into one string they then share. They
// stay as long as the shapes do; each copied on its own, among the garbage
// of the request that named them, would keep a little of that garbage's
// memory in use with it.
func (in *interner) pack(fresh []*shapeState) {
	n := 0
	for _, s := range fresh {
		n += len(s.id)
	}
	for _, d := range in.made {
		n += len(d.filter)
	}
	var b strings.Builder
	b.Grow(n)
	for _, s := range fresh {
		b.WriteString(s.id)
	}
	for _, d := range in.made {
		b.WriteString(d.filter)
	}
	all, off := b.String(), 0
	take := func(s string) string {
		s, off = all[off:off+len(s)], off+len(s)
		return s
	}
	for _, s := range fresh {
		s.id = take(s.id)
	}
	for _, d := range in.made {
		d.filter = take(d.filter) // the same key: the interner finds it as before
	}
	clear(in.made)
	in.made, in.collect = in.made[:0], false
}

// colSet interns the definition's filter column names.
func (in *interner) colSet(d *Def) *colSet {
	in.buf = in.buf[:0]
	i := 0
	for col := range d.Each() {
		if i > 0 {
			in.buf = append(in.buf, 0)
		}
		in.buf = append(in.buf, col...)
		i++
	}
	if c := in.cols[string(in.buf)]; c != nil {
		return c
	}
	c := &colSet{key: string(in.buf), names: make([]string, 0, i)}
	for col := range d.Each() {
		c.names = append(c.names, in.str([]byte(col)))
	}
	in.cols[c.key] = c
	return c
}

// release forgets a definition no live shape uses.
func (in *interner) release(d *Def) {
	k := relKey{d.relID, d.table}
	if m := in.defs[k]; d.refs <= 0 && m != nil && m.Get(d.filter) == d {
		m.Delete(d.filter)
		if m.Len() == 0 {
			delete(in.defs, k)
			if in.lastDefs == m {
				in.lastDefs = nil
			}
		}
	}
}

// pendQueue is a shape's FIFO of pending transactions, in commit order:
// pend[head:] are pending. Kept out of shapeState so that a shape never
// handed anything costs 8 bytes for it.
type pendQueue struct {
	pend []pendEntry
	head int32
}

func (s *shapeState) pending() bool { return s.q != nil && int(s.q.head) < len(s.q.pend) }

func (s *shapeState) firstPending() pendEntry { return s.q.pend[s.q.head] }

// tracker holds the live shapes and the min-heap over their first pending LSN.
type tracker struct {
	shapes   *idmap.Map[shapeState] // by id
	defs     *interner              // the definitions shapes share
	owners   map[string]*owned      // shapes by owner (index.go)
	rels     map[relKey]*relUse     // shapes by relation (index.go)
	lastRel  *relUse                // the relation indexed last (indexRel)
	heap     []*shapeState
	position LSN // end LSN of the last processed transaction, or idle WAL end
	open     LSN // commit LSN of a transaction tracked in pieces whose last piece is not in yet (TrackOpen)
}

func newTracker() *tracker {
	return &tracker{shapes: idmap.New(idOf, 0), defs: newInterner(), owners: make(map[string]*owned), rels: make(map[relKey]*relUse)}
}

func idOf(s *shapeState) string { return s.id }

// add starts tracking a live shape.
func (t *tracker) add(s *shapeState) {
	s.heapIdx = -1
	t.shapes.Put(s)
	t.index(s)
}

// remove forgets a shape and its pending entries. It is called only after
// the shape's eviction committed, so the safe LSN moves past the shape only
// when the tombstone is durable (I1, I4).
func (t *tracker) remove(s *shapeState) {
	if s.heapIdx >= 0 {
		t.heapRemove(int(s.heapIdx))
	}
	s.q = nil
	t.shapes.Delete(s.id)
	t.unindex(s)
}

// track records a transaction with commit LSN commit and end LSN end routed to
// ids, and returns the ids that must receive it: live shapes that have not
// flushed it yet. Shapes whose flushed LSN is >= commit already have it (I2).
// The returned slice is ids itself when no id was dropped.
func (t *tracker) track(commit, end LSN, ids []string, now int64) []string {
	out, copied := ids, false
	for i, id := range ids {
		s := t.shapes.Get(id)
		if s == nil || s.flushed >= commit {
			if !copied {
				out, copied = append(make([]string, 0, len(ids)), ids[:i]...), true
			}
			continue
		}
		if commit > s.lastSent {
			if s.lastSent <= s.flushed {
				t.sent(s) // commit > flushed, checked above
			}
			s.lastSent = commit
			wasPending := s.pending()
			if s.q == nil {
				s.q = &pendQueue{}
			}
			q := s.q
			switch {
			case !wasPending && q.head > 0:
				q.pend, q.head = q.pend[:0], 0
			case len(q.pend) == cap(q.pend) && int(q.head) >= len(q.pend)/2:
				// Reuse the consumed prefix instead of growing (amortised O(1)).
				n := copy(q.pend, q.pend[q.head:])
				q.pend, q.head = q.pend[:n], 0
			}
			q.pend = append(q.pend, pendEntry{lsn: commit, at: now})
			if !wasPending {
				t.heapPush(s)
			}
		}
		// commit <= lastSent: a replay within this process; the entry is
		// still pending, deliver again (at least once, I1) without a duplicate.
		if copied {
			out = append(out, id)
		}
	}
	if end > t.position {
		t.position = end
	}
	if commit > t.position {
		t.position = commit
	}
	return out
}

// ack completes every pending entry of s with commit LSN <= lsn and raises
// its flushed LSN. The caller has checked lsn > s.flushed and
// lsn <= max(s.lastSent, s.flushed).
func (t *tracker) ack(s *shapeState, lsn LSN) {
	s.flushed = lsn
	if s.lastSent <= lsn {
		t.flushedAll(s)
	}
	if !s.pending() || s.firstPending().lsn > lsn {
		return
	}
	q := s.q
	for s.pending() && q.pend[q.head].lsn <= lsn {
		q.head++
	}
	if !s.pending() {
		q.pend, q.head = q.pend[:0], 0
		if cap(q.pend) > 64 {
			s.q = nil
		}
		t.heapRemove(int(s.heapIdx))
		return
	}
	// Compact once the consumed prefix dominates, so a shape with a
	// continuous backlog does not grow its slice forever.
	if int(q.head) > len(q.pend)/2 && q.head >= 16 {
		n := copy(q.pend, q.pend[q.head:])
		q.pend, q.head = q.pend[:n], 0
	}
	t.heapDown(int(s.heapIdx))
}

// safe is the safe flush LSN (docs/api.md, "Concepts"): the smallest pending commit LSN, or
// with nothing pending the end of the last processed transaction (or idle
// WAL end).
func (t *tracker) safe() LSN {
	if len(t.heap) > 0 {
		return t.heap[0].firstPending().lsn
	}
	return t.position
}

// smallest returns up to n pending shapes, smallest first pending LSN first,
// in O(n log n) by walking the heap with a second heap of candidates.
func (t *tracker) smallest(n int) []*shapeState {
	if n <= 0 || n > len(t.heap) {
		n = len(t.heap)
	}
	out := make([]*shapeState, 0, n)
	if n == 0 {
		return out
	}
	cand := []int32{0}
	less := func(a, b int32) bool { return t.less(int(a), int(b)) }
	for len(out) < n && len(cand) > 0 {
		// pop the smallest candidate (linear-time pop on a small binary heap)
		i := cand[0]
		last := len(cand) - 1
		cand[0] = cand[last]
		cand = cand[:last]
		siftDown32(cand, 0, less)
		out = append(out, t.heap[i])
		for _, c := range [2]int32{2*i + 1, 2*i + 2} {
			if int(c) < len(t.heap) {
				cand = append(cand, c)
				siftUp32(cand, len(cand)-1, less)
			}
		}
	}
	return out
}

func siftUp32(h []int32, i int, less func(a, b int32) bool) {
	for i > 0 {
		p := (i - 1) / 2
		if !less(h[i], h[p]) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func siftDown32(h []int32, i int, less func(a, b int32) bool) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && less(h[r], h[l]) {
			m = r
		}
		if !less(h[m], h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// less orders heap slots by first pending LSN, then by shape id so that the
// order of holders is stable.
func (t *tracker) less(i, j int) bool {
	a, b := t.heap[i].firstPending().lsn, t.heap[j].firstPending().lsn
	if a != b {
		return a < b
	}
	return t.heap[i].id < t.heap[j].id
}

func (t *tracker) swap(i, j int) {
	t.heap[i], t.heap[j] = t.heap[j], t.heap[i]
	t.heap[i].heapIdx = int32(i)
	t.heap[j].heapIdx = int32(j)
}

func (t *tracker) heapPush(s *shapeState) {
	s.heapIdx = int32(len(t.heap))
	t.heap = append(t.heap, s)
	t.heapUp(len(t.heap) - 1)
}

func (t *tracker) heapRemove(i int) {
	last := len(t.heap) - 1
	s := t.heap[i]
	if i != last {
		t.swap(i, last)
	}
	t.heap[last] = nil
	t.heap = t.heap[:last]
	s.heapIdx = -1
	if i != last {
		t.heapDown(i)
		t.heapUp(i)
	}
}

func (t *tracker) heapUp(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !t.less(i, p) {
			return
		}
		t.swap(i, p)
		i = p
	}
}

func (t *tracker) heapDown(i int) {
	n := len(t.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && t.less(r, l) {
			m = r
		}
		if !t.less(m, i) {
			return
		}
		t.swap(i, m)
		i = m
	}
}
