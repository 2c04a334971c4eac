package ledger

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// PutShape creates a shape owned by a live consumer, or returns the existing
// one when the same definition is put again (created=false). Another
// definition or owner for a live id is ErrShapeConflict. An id that was
// evicted comes back with the next generation, never the evicted one (I4).
//
// The new shape starts just below the current processed position: it
// receives transactions with a commit LSN above StartLSN. The processed
// position is an end LSN (or the idle WAL end), and the next transaction's
// commit record may begin exactly there, so StartLSN is one below it; the
// shape's flushed LSN (inclusive, like an ack) must not cover a transaction
// not yet processed (I1).
func (l *Ledger) PutShape(spec ShapeSpec) (Shape, bool, error) {
	res, err := l.PutShapes([]ShapeSpec{spec})
	if err != nil {
		return Shape{}, false, err
	}
	sh := res[0].Shape
	if sh.Def != nil {
		sh.Filter = sh.Def.Filter()
	}
	return sh, res[0].Created, res[0].Err
}

// ShapeResult is PutShapes' answer for one ShapeSpec: the shape and whether
// this call created it, or why it was refused.
type ShapeResult struct {
	// Shape carries its definition in Def and leaves Filter nil: a
	// million shapes created in batches would otherwise each leave a map
	// behind as garbage.
	Shape   Shape
	Created bool
	Err     error // ErrInvalid, ErrShapeConflict, ErrNotFound (consumer), *GoneError, or the commit's error
}

// PutShapes is PutShape for many shapes at once, answered one by one in the
// order given: each spec is created, found with the same definition, or
// refused on its own. The shapes it creates are written by the next group
// commit (see commit.go), together with whatever acks and heartbeats it
// carries, and only then become live: a creation answered is durable (I4:
// its generation is one above every tombstone of its id). The same id twice
// in specs is one shape; the second answer is not "created". A failed commit
// creates none of them, and each is answered with its error.
//
// Creations are journaled in summary, one event per call that created more
// than one shape: the shape's record keeps when it was created, and the
// bounded journal is for evictions and the rarer events around them.
func (l *Ledger) PutShapes(specs []ShapeSpec) ([]ShapeResult, error) {
	res := make([]ShapeResult, len(specs))
	l.writeMu.Lock()
	defer l.writeMu.Unlock()

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	now := l.now()
	start := max(l.t.position, l.startFloor)
	switch {
	case l.t.open != 0 && l.t.open >= start:
		// A transaction is being routed in pieces: the shape starts at its
		// commit and gets none of it (TrackOpen).
		start = l.t.open
	case start > 0:
		start-- // the next commit may begin at the processed position itself
	}
	var fresh []*shapeState
	waiting := make(map[int]*shapeState) // answers that need the commit: index in specs -> new shape
	inBatch := make(map[string]*shapeState)
	l.t.defs.collect = true
	for i, spec := range specs {
		if err := validID("shape", spec.ID); err != nil {
			res[i].Err = err
			continue
		}
		if spec.Table == "" {
			res[i].Err = fmt.Errorf("%w: shape %q has no table", ErrInvalid, spec.ID)
			continue
		}
		filter := canonFilter(spec.Filter)
		same := func(s *shapeState) bool {
			return s.consumer == spec.Consumer && s.table == spec.Table && s.filter == filter
		}
		if s := l.t.shapes.Get(spec.ID); s != nil {
			if same(s) {
				res[i].Shape = l.specView(s)
			} else {
				res[i].Err = fmt.Errorf("%w: shape %q is owned by %q on table %s", ErrShapeConflict, spec.ID, s.consumer, s.table)
			}
			continue
		}
		if s := inBatch[spec.ID]; s != nil {
			if same(s) {
				waiting[i] = s
			} else {
				res[i].Err = fmt.Errorf("%w: shape %q is owned by %q on table %s", ErrShapeConflict, spec.ID, s.consumer, s.table)
			}
			continue
		}
		c := l.consumers[spec.Consumer]
		switch {
		case c == nil:
			res[i].Err = fmt.Errorf("%w: consumer %q: register it before creating shapes", ErrNotFound, spec.Consumer)
			continue
		case c.Gone:
			res[i].Err = &GoneError{Consumer: c.ID, Reason: c.GoneReason, At: c.GoneAt}
			continue
		}
		s := &shapeState{
			id: spec.ID, consumer: c.ID, Def: l.t.defs.def(spec.Table, spec.RelID, filter),
			start: start, flushed: start, created: now.UnixNano(), heapIdx: -1, boundAt: spec.BoundAt,
		}
		fresh = append(fresh, s)
		inBatch[s.id] = s
		waiting[i] = s
		res[i].Created = true
	}
	l.t.defs.pack(fresh)
	if len(fresh) == 0 {
		l.mu.Unlock()
		return res, nil
	}
	b := l.fill
	b.created = append(b.created, fresh...)
	if len(fresh) > 1 {
		b.summaries = append(b.summaries, createdSummary(fresh, now))
	}
	b.force = true
	l.queued()
	l.mu.Unlock()

	<-b.done
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, s := range waiting {
		if b.err != nil {
			res[i] = ShapeResult{Err: fmt.Errorf("creating shape %q: %w", s.id, b.err)}
			continue
		}
		res[i].Shape = l.specView(s)
	}
	return res, nil
}

// createdSummary is the one journal event for shapes created together.
func createdSummary(fresh []*shapeState, now time.Time) Event {
	var tables []string
	consumer := fresh[0].consumer
	for _, s := range fresh {
		if !slices.Contains(tables, s.table) {
			tables = append(tables, s.table)
		}
		if s.consumer != consumer {
			consumer = ""
		}
	}
	slices.Sort(tables)
	if len(tables) > 5 {
		tables = append(tables[:5], fmt.Sprintf("and %d more", len(tables)-5))
	}
	return Event{Time: now, Kind: EventShapesCreated, Consumer: consumer, LSN: fresh[0].start,
		Detail: fmt.Sprintf("%d shapes on %s, %s to %s", len(fresh), strings.Join(tables, ", "), fresh[0].id, fresh[len(fresh)-1].id)}
}

// writeCreated writes the records of shapes created by PutShapes, each at
// the next generation of its id (I4).
func writeCreated(tx *bolt.Tx, created []*shapeState) error {
	bk := tx.Bucket(bucketShapes)
	for _, s := range created {
		var err error
		if s.gen, err = nextGeneration(tx, s.id); err != nil {
			return err
		}
		if err := put(bk, []byte(s.id), encodeShape(s)); err != nil {
			return fmt.Errorf("creating shape %q: %w", s.id, err)
		}
	}
	return nil
}

// nextGeneration is one above every generation the id had: its tombstones
// and, for tombstones already compacted, the generations bucket (I4).
func nextGeneration(tx *bolt.Tx, id string) (uint64, error) {
	var g uint64
	v, err := get(tx.Bucket(bucketGenerations), []byte(id), true)
	if err != nil {
		return 0, fmt.Errorf("generation of %q: %w", id, err)
	}
	if len(v) == 8 {
		g = binary.BigEndian.Uint64(v)
	}
	p := tombPrefix(id)
	c := tx.Bucket(bucketTombstones).Cursor()
	for k, _ := c.Seek(p); k != nil && len(k) == len(p)+8 && string(k[:len(p)]) == string(p); k, _ = c.Next() {
		g = max(g, binary.BigEndian.Uint64(k[len(p):]))
	}
	return g + 1, nil
}

// shapeView builds the public view. Caller holds mu.
func (l *Ledger) shapeView(s *shapeState) Shape {
	sh := l.specView(s)
	sh.Filter = s.Filter()
	return sh
}

// specView is shapeView without the filter map (ShapeResult). Caller holds
// mu.
func (l *Ledger) specView(s *shapeState) Shape {
	sh := Shape{
		ShapeSpec:  ShapeSpec{ID: s.id, Consumer: s.consumer, Table: s.table, RelID: s.relID, BoundAt: s.boundAt, Def: s.Def},
		Generation: s.gen, StartLSN: s.start, FlushedLSN: s.flushed, LastSent: s.lastSent,
		CreatedAt: fromNanos(s.created), LastAckAt: fromNanos(s.lastAck),
	}
	if s.pending() {
		p := s.firstPending()
		sh.PendingLSN, sh.PendingSince = p.lsn, fromNanos(p.at)
	}
	return sh
}

// Shape returns a live shape.
func (l *Ledger) Shape(id string) (Shape, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.t.shapes.Get(id)
	if s == nil {
		return Shape{}, false
	}
	return l.shapeView(s), true
}

// ShapeDef is Shape without the filter map: the shape's Def carries its
// filter. It is for the paths that look a shape up on every ack or change
// and never read the filter, which a map built for each would only slow.
func (l *Ledger) ShapeDef(id string) (Shape, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.t.shapes.Get(id)
	if s == nil {
		return Shape{}, false
	}
	return l.specView(s), true
}

// SettledShape is Shape once an eviction of the shape that is being
// committed is over: a caller that changed what the eviction was judged on
// (see EvictIf) and then looks learns whether its change came in time. It
// may wait for a bbolt commit; hold no lock while calling it.
func (l *Ledger) SettledShape(id string) (Shape, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.waitShape(id) {
	}
	s := l.t.shapes.Get(id)
	if s == nil {
		return Shape{}, false
	}
	return l.shapeView(s), true
}

// Shapes returns every live shape, ordered by id.
func (l *Ledger) Shapes() []Shape {
	l.mu.Lock()
	out := make([]Shape, 0, l.t.shapes.Len())
	for s := range l.t.shapes.All() {
		out = append(out, l.shapeView(s))
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// DeleteShape evicts a shape at its consumer's request (reason released,
// actor "consumer").
func (l *Ledger) DeleteShape(id string) error {
	_, err := l.Evict(id, ReasonReleased, "deleted by its consumer", "consumer")
	return err
}

// DeleteShapeIf is DeleteShape of the shape as observed when its owner was
// checked: if the id was evicted and created again since (by its consumer or
// another), the shape now live is left alone and the answer wraps ErrChanged.
func (l *Ledger) DeleteShapeIf(seen Shape) error {
	_, err := l.EvictIf(seen, ReasonReleased, "deleted by its consumer", "consumer",
		func(cur Shape, _ Consumer) bool { return cur.Consumer == seen.Consumer })
	return err
}

// Evict removes a live shape and writes its tombstone and a journal event in
// one bbolt transaction (I4). Only once that transaction has committed does
// the tracker drop the shape's pending entries, so the safe LSN moves past
// the shape only when the eviction is durable (I1). Later acks for the shape
// get a *GoneError with the reason; acks that arrive while the transaction
// commits wait for it. An unknown id is ErrNotFound; an id already evicted
// is a *GoneError.
func (l *Ledger) Evict(id string, reason Reason, evidence, actor string) (Tombstone, error) {
	return l.evict(id, 0, nil, reason, evidence, actor)
}

// EvictIf is Evict conditional on the observation the decision was made
// from: it evicts the shape only if it is still the generation seen and
// still reports true for the shape and its consumer as they are now (owner is
// the zero Consumer when the shape's consumer is unknown). still runs under
// the lock that orders acks and heartbeats, so whatever was answered before
// it is seen by it, and whatever comes after waits for the eviction's
// outcome: an ack or heartbeat that made the reason false is never accepted
// and then evicted anyway (I4). still must not call the Ledger. When the
// condition no longer holds it returns an error wrapping ErrChanged and
// changes nothing; the caller looks again.
func (l *Ledger) EvictIf(seen Shape, reason Reason, evidence, actor string, still func(cur Shape, owner Consumer) bool) (Tombstone, error) {
	if seen.Generation == 0 {
		return Tombstone{}, fmt.Errorf("%w: shape %q: EvictIf needs the generation observed", ErrInvalid, seen.ID)
	}
	return l.evict(seen.ID, seen.Generation, still, reason, evidence, actor)
}

// evict is Evict and EvictIf: gen, when not 0, must be the live generation
// and a non-nil still must hold, checked under mu.
func (l *Ledger) evict(id string, gen uint64, still func(Shape, Consumer) bool, reason Reason, evidence, actor string) (Tombstone, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return Tombstone{}, ErrClosed
	}
	s := l.t.shapes.Get(id)
	if s == nil {
		err := l.goneOrNotFound(id)
		l.mu.Unlock()
		return Tombstone{}, err
	}
	now := l.now()
	if gen != 0 && s.gen != gen {
		l.mu.Unlock()
		return Tombstone{}, fmt.Errorf("%w: shape %q is generation %d, observed generation %d", ErrChanged, id, s.gen, gen)
	}
	if still != nil {
		var owner Consumer
		if c := l.consumers[s.consumer]; c != nil {
			owner = l.view(c)
		}
		if !still(l.shapeView(s), owner) {
			l.mu.Unlock()
			return Tombstone{}, fmt.Errorf("%w: shape %q (%s no longer holds)", ErrChanged, id, reason)
		}
	}
	ts := tombstoneOf(s, reason, evidence, actor, now)
	ch := l.beginChange(s.consumer, []*shapeState{s})
	l.mu.Unlock()
	if testHookCommit != nil {
		testHookCommit()
	}

	err := guard(func() error {
		return l.db.Update(func(tx *bolt.Tx) error {
			return evictTx(tx, newJournal(tx, now), ts)
		})
	})
	l.mu.Lock()
	if err == nil {
		l.dropShape(s, ts)
	}
	l.endChange(ch)
	l.mu.Unlock()
	if err != nil {
		return Tombstone{}, fmt.Errorf("evicting shape %q: %w", id, err)
	}
	l.log.Info().Str("shape", id).Str("consumer", ts.Consumer).Str("reason", string(reason)).
		Str("evidence", evidence).Str("actor", actor).Stringer("flushed_lsn", ts.FlushedLSN).Msg("shape evicted")
	return ts, nil
}

func tombstoneOf(s *shapeState, reason Reason, evidence, actor string, now time.Time) Tombstone {
	return Tombstone{Shape: s.id, Generation: s.gen, Consumer: s.consumer, Reason: reason, Evidence: evidence,
		Actor: actor, At: now.UTC(), FlushedLSN: s.flushed}
}

// evictTx deletes the shape record and writes its tombstone and journal
// event. A record of another generation is left alone.
func evictTx(tx *bolt.Tx, j *journal, ts Tombstone) error {
	sb := tx.Bucket(bucketShapes)
	v, err := get(sb, []byte(ts.Shape), true)
	if err != nil {
		return fmt.Errorf("shape %q: %w", ts.Shape, err)
	}
	if len(v) >= shapeHeaderLen && binary.BigEndian.Uint64(v[offGen:]) == ts.Generation {
		if err := sb.Delete([]byte(ts.Shape)); err != nil {
			return err
		}
	}
	tv, err := jsonMarshal(ts.rec())
	if err != nil {
		return err
	}
	if err := put(tx.Bucket(bucketTombstones), tombKey(ts.Shape, ts.Generation), tv); err != nil {
		return err
	}
	return j.add(Event{Kind: EventEvicted, Consumer: ts.Consumer, Shape: ts.Shape, LSN: ts.FlushedLSN,
		Reason: ts.Reason, Detail: detail(ts.Evidence, ts.Actor)})
}

func detail(evidence, actor string) string {
	switch {
	case actor == "":
		return evidence
	case evidence == "":
		return "by " + actor
	}
	return evidence + " (by " + actor + ")"
}

// dropShape forgets an evicted shape. Caller holds mu, after the tombstone
// committed.
func (l *Ledger) dropShape(s *shapeState, ts Tombstone) {
	if cur := l.t.shapes.Get(s.id); cur == s {
		l.t.remove(s)
	}
	l.tombs[s.id] = ts
	l.tombCount++
	l.shapeChanged(s.id)
	if l.evictions == nil {
		l.evictions = map[Reason]uint64{}
	}
	l.evictions[ts.Reason]++
}

// goneOrNotFound is the error for an id that is not live. Caller holds mu.
func (l *Ledger) goneOrNotFound(id string) error {
	if ts, ok := l.tombs[id]; ok {
		return &GoneError{Shape: id, Consumer: ts.Consumer, Reason: ts.Reason, Evidence: ts.Evidence, At: ts.At}
	}
	return fmt.Errorf("%w: shape %q", ErrNotFound, id)
}

// Tombstone returns the latest tombstone of the id, if it was ever evicted
// (and the tombstone is within retention).
func (l *Ledger) Tombstone(id string) (Tombstone, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts, ok := l.tombs[id]
	return ts, ok
}

// Tombstones returns every tombstone in the file, ordered by id and
// generation.
func (l *Ledger) Tombstones() []Tombstone {
	var out []Tombstone
	err := guard(func() error {
		return l.db.View(func(tx *bolt.Tx) error {
			var err error
			out, err = readTombstones(tx, true)
			return err
		})
	})
	if err != nil {
		l.log.Error().Err(err).Msg("reading tombstones")
	}
	return out
}

// TombstoneCount returns how many tombstones are stored (what Tombstones
// would return), without reading them: status and every metrics scrape ask.
func (l *Ledger) TombstoneCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tombCount
}

func readTombstones(tx *bolt.Tx, sealed bool) ([]Tombstone, error) {
	var out []Tombstone
	err := tx.Bucket(bucketTombstones).ForEach(func(k, v []byte) error {
		ts, err := readTomb(k, v, sealed)
		if err != nil {
			return err
		}
		out = append(out, ts)
		return nil
	})
	return out, err
}

// ShapeCount returns the number of live shapes the consumer owns.
func (l *Ledger) ShapeCount(consumer string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o := l.t.owners[consumer]; o != nil {
		return o.n
	}
	return 0
}

func readTomb(k, v []byte, sealed bool) (Tombstone, error) {
	rec, err := unseal(k, v, sealed)
	if err != nil {
		return Tombstone{}, fmt.Errorf("tombstone %q: %w", k, err)
	}
	return decodeTomb(k, rec)
}
