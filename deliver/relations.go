package deliver

import (
	"errors"
	"fmt"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// ActorStream is the actor recorded on evictions decided from the
// replication stream itself (a relation message).
const ActorStream = "stream"

// evictChangedRelations evicts, before txn is routed, every shape that a
// relation message of txn shows renamed away from its table or without a
// column its filter names. It runs in WAL order: the shape gets everything
// committed before the change and nothing after it, and is not tracked as
// pending on txn. A relation message of a transaction that commits before
// the shape's binding (a stream behind the catalog the shape was bound
// against) describes an older definition and is not held against it.
//
// The evictions are not liveness guesses, so no circuit breaker holds them
// back: a shape whose table is gone can never get a change again, and
// keeping it live would only keep its consumer waiting on nothing.
func (h *Hub) evictChangedRelations(txn *stream.Txn) error {
	var evicted []string
	h.routeMu.Lock() // no CreateShape between the check and the eviction
	for _, rel := range txn.Relations {
		// Only the shapes the message no longer fits: a table's shapes
		// can number hundreds of thousands, and this runs on the stream's
		// path for the first transaction of every table after a start.
		for _, sh := range h.router.Misfits(rel.ID, rel.Table, rel.Columns) {
			if txn.CommitLSN < sh.BoundAt {
				continue
			}
			evidence := ledger.ShapeSpec(sh).RelationChanged(rel.Table, rel.Columns)
			if evidence == "" {
				continue
			}
			evidence += fmt.Sprintf(" (relation message in transaction %s)", txn.CommitLSN)
			_, err := h.l.Evict(sh.ID, ledger.ReasonRelationChanged, evidence, ActorStream)
			switch {
			case err == nil:
				evicted = append(evicted, sh.ID)
			case errors.Is(err, ledger.ErrNotFound), errors.Is(err, ledger.ErrGone):
				// Evicted meanwhile for another reason: Sync tells its consumer.
			default:
				h.routeMu.Unlock()
				return err
			}
		}
	}
	h.routeMu.Unlock()
	for _, id := range evicted {
		h.removeShape(id, ledger.ReasonRelationChanged, true)
	}
	return nil
}
