package deliver

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/ledgerd/ledgerd/ledger"
)

// AckResult is what an ack achieved.
type AckResult struct {
	// FlushLSN is the position that may now be confirmed to Postgres.
	FlushLSN ledger.LSN
	// Gone maps shapes named by the ack that were evicted to the reason.
	Gone map[string]ledger.Reason
}

// Ack records the consumer's acks (shape -> commit LSN: everything routed to
// the shape up to that position is flushed) and returns once they are
// durable in the ledger (I6). Nothing is applied unless every ack is valid:
// an ack past what was written to the consumer's stream is a *BeyondError,
// a shape of another consumer ErrNotOwner. A lower ack than the shape's
// flushed position is accepted and ignored. Evicted shapes are reported in
// AckResult.Gone rather than failing the call.
func (h *Hub) Ack(ctx context.Context, consumer string, acks map[string]ledger.LSN) (AckResult, error) {
	res := AckResult{Gone: map[string]ledger.Reason{}}
	o := h.outbox(consumer, false)
	delivered := o.deliveredLSN()
	ids := make([]string, 0, len(acks))
	for id := range acks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	apply := ids[:0:0]
	valid := make(map[string]ledger.LSN, len(acks))
	for _, id := range ids {
		lsn := acks[id]
		sh, ok := h.l.ShapeDef(id)
		if !ok || sh.Consumer != consumer {
			if ts, ok := h.l.Tombstone(id); ok && ts.Consumer == consumer {
				res.Gone[id] = ts.Reason
				continue
			}
			return res, fmt.Errorf("shape %s: %w %s", id, ErrNotOwner, consumer)
		}
		if lsn <= sh.FlushedLSN {
			continue // a lower ack is accepted and ignored (I6)
		}
		if lsn > delivered {
			return res, &BeyondError{Consumer: consumer, Shape: id, LSN: lsn, Delivered: delivered}
		}
		if lsn > sh.LastSent {
			// The consumer was written up to lsn, and nothing routed to
			// the shape after its last transaction: the ack covers that
			// one (never an exact-match rule). Acking lsn itself would be
			// refused by the ledger after the shapes before it in this
			// call were applied.
			if sh.LastSent <= sh.FlushedLSN {
				continue
			}
			lsn = sh.LastSent
		}
		valid[id] = lsn
		apply = append(apply, id)
	}
	return h.apply(ctx, o, consumer, apply, valid, res)
}

// AckAll acks lsn for every shape of the consumer: each shape is acked up
// to the last transaction it was sent, if that is not past lsn. It looks
// only at the shapes with something unacked (ledger.AckAllOf): a consumer
// with thousands of shapes acks in the time the shapes it moves take.
func (h *Hub) AckAll(ctx context.Context, consumer string, lsn ledger.LSN) (AckResult, error) {
	res := AckResult{Gone: map[string]ledger.Reason{}}
	o := h.outbox(consumer, false)
	delivered := o.deliveredLSN()
	if lsn > delivered && h.l.FlushedBelow(consumer, lsn) {
		return res, &BeyondError{Consumer: consumer, LSN: lsn, Delivered: delivered}
	}
	todo := h.l.AckAllOf(consumer, lsn)
	acks := make(map[string]ledger.LSN, len(todo))
	ids := make([]string, 0, len(todo))
	for _, a := range todo {
		acks[a.ID] = a.LSN
		ids = append(ids, a.ID)
	}
	return h.apply(ctx, o, consumer, ids, acks, res)
}

func (h *Hub) apply(ctx context.Context, o *outbox, consumer string, ids []string, acks map[string]ledger.LSN, res AckResult) (AckResult, error) {
	var high ledger.LSN
	// The outbox is pruned of what the ledger took in one pass, also when
	// a later ack of the call is refused, and before waitWrites below.
	acked := make(map[string]ledger.LSN, len(ids))
	prune := func() {
		if o != nil && len(acked) > 0 {
			o.mu.Lock()
			h.pruneAckedLocked(o, acked)
			o.mu.Unlock()
		}
	}
	for _, id := range ids {
		lsn := acks[id]
		high = max(high, lsn)
		err := h.l.Ack(id, lsn)
		var gone *ledger.GoneError
		switch {
		case err == nil:
			h.acks.Add(1)
		case errors.As(err, &gone):
			res.Gone[id] = gone.Reason
			continue
		case errors.Is(err, ledger.ErrAckBeyondSent):
			prune()
			return res, &BeyondError{Consumer: consumer, Shape: id, LSN: lsn, Delivered: sentOf(err)}
		default:
			prune()
			return res, fmt.Errorf("acking shape %s at %s: %w", id, lsn, err)
		}
		acked[id] = lsn
	}
	prune()
	// A reconnected stream may have taken an acked transaction from the
	// outbox before the prune and still be resending it: the ack is
	// answered only once that write is over, so the transaction is never
	// written after the answer (I2).
	if err := o.waitWrites(ctx, high); err != nil {
		return res, fmt.Errorf("waiting for the change stream to write: %w", err)
	}
	if err := h.l.Sync(ctx); err != nil {
		return res, fmt.Errorf("waiting for the ack to be durable: %w", err)
	}
	res.FlushLSN = h.l.FlushLSN()
	if len(ids) > 0 {
		// Confirm it to Postgres soon, not at the next status interval:
		// on an idle database nothing else would move the slot (I3).
		if cur := h.nudge.Load(); cur != nil {
			if st := cur.Load(); st != nil {
				st.Nudge()
			}
		}
	}
	return res, nil
}

func sentOf(err error) ledger.LSN {
	var ae *ledger.AckError
	if errors.As(err, &ae) {
		return ae.LastSent
	}
	return 0
}

// deliveredLSN is the commit LSN of the last transaction written to the
// consumer's stream; 0 for a consumer without an outbox.
func (o *outbox) deliveredLSN() ledger.LSN {
	if o == nil {
		return 0
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.delivered
}

// waitWrites waits for the resends being written whose transaction is at or
// before upTo.
func (o *outbox) waitWrites(ctx context.Context, upTo ledger.LSN) error {
	if o == nil || upTo == 0 {
		return nil
	}
	o.mu.Lock()
	var wait []chan struct{}
	for _, wr := range o.writing {
		if wr.commit <= upTo {
			wait = append(wait, wr.done)
		}
	}
	o.mu.Unlock()
	for _, done := range wait {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
