package ledger

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// BindShapes binds live shapes that are not bound yet to their table's
// relation OID (ShapeSpec.RelID), resolved at WAL position at, in one bbolt
// transaction: the reconciler's catalog check binds the shapes recorded
// before binding existed, one table at a time. Shapes already bound, or no
// longer live, are left alone. The binding is what lets a rename or a drop
// of the table be noticed, so that the shape is evicted rather than left
// live and deaf (I1 is about live shapes: one that can never get a change
// must not look live).
func (l *Ledger) BindShapes(ids []string, relID uint32, at LSN) error {
	if relID == 0 {
		return fmt.Errorf("%w: relation id 0 binds nothing", ErrInvalid)
	}
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	var todo []*shapeState
	for _, id := range ids {
		if s := l.t.shapes.Get(id); s != nil && s.relID == 0 {
			todo = append(todo, s)
		}
	}
	l.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	err := guard(func() error {
		return l.db.Update(func(tx *bolt.Tx) error {
			sb := tx.Bucket(bucketShapes)
			for _, s := range todo {
				v, err := get(sb, []byte(s.id), true)
				if err != nil {
					return fmt.Errorf("shape %q: %w", s.id, err)
				}
				if len(v) < shapeHeaderLen || binary.BigEndian.Uint64(v[offGen:]) != s.gen {
					continue // evicted since
				}
				// Only the tail changes: the header keeps the stored
				// positions, which move through group commits alone (I6).
				nv := encodeShape(&shapeState{id: s.id, consumer: s.consumer, boundAt: at,
					Def: &Def{table: s.table, relID: relID, filter: s.filter}})
				copy(nv[:shapeHeaderLen], v[:shapeHeaderLen])
				if err := put(sb, []byte(s.id), nv); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("binding %d shapes to relation %d: %w", len(todo), relID, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range todo {
		if l.t.shapes.Get(s.id) == s {
			l.t.unindexRel(s)
			s.Def = l.t.defs.def(s.table, relID, s.filter)
			s.boundAt = at
			l.t.indexRel(s)
			l.shapeChanged(s.id)
		}
	}
	return nil
}

// RelationChanged judges the shape against its relation's definition as of
// some point (a relation message, or the catalog): the table's name then and
// its columns. It returns the evidence of a relation_changed eviction, or ""
// when the shape's table and filter columns are still in place (a column
// added, or one the filter does not name dropped, keeps the shape).
func (s ShapeSpec) RelationChanged(table string, columns []string) string {
	if table != s.Table {
		return fmt.Sprintf("table %s (relation %d) was renamed to %s", s.Table, s.RelID, table)
	}
	var missing []string
	for _, col := range s.columns() {
		if !slices.Contains(columns, col) {
			missing = append(missing, col)
		}
	}
	switch len(missing) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf("column %s of table %s (relation %d), named by the shape's filter, was dropped or renamed", missing[0], s.Table, s.RelID)
	}
	return fmt.Sprintf("columns %s of table %s (relation %d), named by the shape's filter, were dropped or renamed",
		strings.Join(missing, ", "), s.Table, s.RelID)
}
