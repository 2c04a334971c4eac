package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/ledgerd/ledgerd/ledger"
)

// Relation is a table as the catalog has it now.
type Relation struct {
	Table   string   // "schema.table"
	Columns []string // its columns, dropped ones left out
}

// Catalog reads the Postgres catalog for the relation check. Each pass asks
// once for all the distinct tables that have shapes, never once per shape.
type Catalog interface {
	// Relations returns the relations among ids that still exist.
	Relations(ctx context.Context, ids []uint32) (map[uint32]Relation, error)
	// ResolveTables returns the relation OIDs of the named tables
	// ("schema.table") that exist, and the WAL position the answer holds
	// from.
	ResolveTables(ctx context.Context, tables []string) (map[string]uint32, ledger.LSN, error)
}

// relations is the catalog check: every shape bound to a relation that no
// longer exists, now has another name, or lacks a column the shape's filter
// names is evicted as relation_changed. Postgres sends nothing in the
// stream for a DROP TABLE, and for a rename or a dropped column nothing
// until the next change of the table, so without this check such a shape
// would stay live and deaf. Shapes recorded before shapes were bound to
// relations are bound here, by name, on the first pass.
//
// The catalog may be ahead of the stream: a shape whose table is renamed
// while the stream still reads older transactions is evicted before it got
// them, like any evicted shape that must be created again.
//
// These evictions are not liveness guesses and skip the circuit breaker
// (I5 is about consumers judged dead): holding back the eviction of a shape
// whose table is gone would only keep it live and deaf longer.
func (p *pass) relations(ctx context.Context) {
	cat := p.r.cfg.Catalog
	if cat == nil {
		return
	}
	l := p.r.cfg.Ledger
	var bound []ledger.RelationUse
	var unbound []string
	for _, u := range l.Relations() {
		if u.RelID != 0 {
			bound = append(bound, u)
		} else {
			unbound = append(unbound, u.Table)
		}
	}
	if len(unbound) > 0 {
		p.bind(ctx, cat, unbound)
	}
	if len(bound) == 0 {
		return
	}
	ids := make([]uint32, 0, len(bound))
	for _, u := range bound {
		if len(ids) == 0 || ids[len(ids)-1] != u.RelID {
			ids = append(ids, u.RelID)
		}
	}
	rels, err := cat.Relations(ctx, ids)
	if err != nil {
		p.fail(fmt.Errorf("reading the catalog for %d tables with shapes: %w", len(ids), err))
		return
	}
	for _, u := range bound {
		rel, ok := rels[u.RelID]
		if ok {
			// The table's shapes as one: its name and every column their
			// filters name. Only a table that changed is looked at shape
			// by shape.
			all := make(map[string][]string, len(u.Columns))
			for _, col := range u.Columns {
				all[col] = nil
			}
			if (ledger.ShapeSpec{Table: u.Table, RelID: u.RelID, Filter: all}).RelationChanged(rel.Table, rel.Columns) == "" {
				continue
			}
		}
		for _, sh := range l.ShapesOn(u.RelID, u.Table) {
			var evidence string
			if !ok {
				evidence = fmt.Sprintf("table %s (relation %d) was dropped", sh.Table, u.RelID)
			} else if evidence = sh.RelationChanged(rel.Table, rel.Columns); evidence == "" {
				continue
			}
			p.evictRelation(sh, evidence+" (catalog check)")
		}
	}
}

// bind binds shapes recorded without a relation to their table's, by name;
// a shape whose table no longer exists is evicted.
func (p *pass) bind(ctx context.Context, cat Catalog, tables []string) {
	ids, at, err := cat.ResolveTables(ctx, tables)
	if err != nil {
		p.fail(fmt.Errorf("resolving %d tables of shapes not bound to a relation: %w", len(tables), err))
		return
	}
	for _, table := range tables {
		shapes := p.r.cfg.Ledger.ShapesOn(0, table)
		id, ok := ids[table]
		if !ok {
			for _, sh := range shapes {
				p.evictRelation(sh, fmt.Sprintf("table %s no longer exists: dropped or renamed (catalog check)", table))
			}
			continue
		}
		shapeIDs := make([]string, len(shapes))
		for i, sh := range shapes {
			shapeIDs[i] = sh.ID
		}
		if err := p.r.cfg.Ledger.BindShapes(shapeIDs, id, at); err != nil {
			p.fail(err)
			continue
		}
		p.r.log.Info().Str("table", table).Uint32("relation", id).Int("shapes", len(shapes)).Msg("shapes bound to their table's relation")
	}
}

// evictRelation evicts a shape as relation_changed if it is still the
// generation and binding seen. No breaker: see relations.
func (p *pass) evictRelation(sh ledger.Shape, evidence string) {
	r := p.r
	if p.evicted[sh.ID] || p.stopped() {
		return
	}
	_, err := r.cfg.Ledger.EvictIf(sh, ledger.ReasonRelationChanged, evidence, Actor,
		func(cur ledger.Shape, _ ledger.Consumer) bool { return cur.RelID == sh.RelID })
	var gone *ledger.GoneError
	switch {
	case errors.Is(err, ledger.ErrChanged), errors.As(err, &gone), errors.Is(err, ledger.ErrNotFound):
		return // changed since observed: decided again next pass
	case err != nil:
		p.fail(fmt.Errorf("evicting shape %s (%s): %w", sh.ID, ledger.ReasonRelationChanged, err))
		return
	}
	p.evicted[sh.ID] = true
	r.m.evictions.WithLabelValues(string(ledger.ReasonRelationChanged)).Inc()
	r.forget(sh.ID)
}
