package deliver

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/route"
	"github.com/ledgerd/ledgerd/stream"
)

// A transaction reaches a consumer as one or more parts. The stream hands
// a large transaction over in pieces as it is decoded; HandleTxn routes
// each piece at once and gathers, per consumer, the changes that reach it
// into a fragment. A fragment about to grow past Config.FragmentBytes goes
// to the outbox as a part; the transaction's last piece sends every
// consumer's last part. Memory for a transaction of any size is therefore
// the piece being routed, one fragment per consumer, and the outboxes,
// whose byte limit counts parts like whole transactions.
//
// A consumer that reads the parts of a transaction larger than its outbox
// as they come must not be held up by the parts it has read: those are
// spilled (dropped from the outbox) to make room. The transaction can then
// no longer be resent from memory; if the stream ends before the
// transaction is acked, the outbox gives up on it (as on an overflow) and
// the transaction is read again from the slot, where it is still pending
// (I1), and sent whole from its first part.

// openTxn is the transaction HandleTxn is routing in pieces.
type openTxn struct {
	commit, end ledger.LSN
	xid         uint32
	commitTime  time.Time
	frags       map[string]*fragment // by consumer
	order       []string             // consumers in frags
}

// fragment gathers one consumer's changes of the open transaction until
// they make a part.
type fragment struct {
	changes []stream.Change
	shapes  [][]string
	size    int64    // memory held, as counted against Config.OutboxBytes
	wire    int64    // about the bytes of its txn frame
	union   []string // the consumer's shapes the transaction reached so far (sorted)
	parts   int      // parts sent to the outbox
}

// addChanges adds the changes of txn that reach the consumer's shapes to
// its fragment, sending the fragment as a part first whenever a change
// would take it past Config.FragmentBytes.
func (h *Hub) addChanges(ctx context.Context, cid string, f *fragment, txn *stream.Txn, res *route.Result, shapes []string) error {
	for i, ids := range res.Changes {
		var sel []string
		for _, id := range ids {
			if _, ok := slices.BinarySearch(shapes, id); ok {
				sel = append(sel, id)
			}
		}
		if len(sel) == 0 {
			continue
		}
		ch := txn.Changes[i]
		size := changeOverhead + int64(len(ch.Table)) + rowSize(ch.New) + rowSize(ch.Old)
		wire := 48 + int64(len(ch.Table)) + rowWire(ch.New) + rowWire(ch.Old)
		for _, id := range sel {
			size += int64(len(id)) + 16
			wire += int64(len(id)) + 3
		}
		if len(f.changes) > 0 && f.wire+wire > h.cfg.FragmentBytes {
			if err := h.seal(ctx, h.open, cid, f, false); err != nil {
				return err
			}
		}
		f.changes = append(f.changes, ch)
		f.shapes = append(f.shapes, sel)
		f.size += size
		f.wire += wire
		for _, id := range sel {
			if j, ok := slices.BinarySearch(f.union, id); !ok {
				f.union = slices.Insert(f.union, j, id)
			}
		}
	}
	return nil
}

// seal sends the consumer's fragment to its outbox as the transaction's
// next part, or its last. The part's pending shapes are those the
// transaction reached so far that are still routed (an evicted shape's
// parts left the outbox with it): the last part holds them all, so it is
// the last part to leave the outbox, after every shape acked.
func (h *Hub) seal(ctx context.Context, open *openTxn, cid string, f *fragment, last bool) error {
	if !last && len(f.changes) == 0 {
		return nil
	}
	pending := make([]string, 0, len(f.union))
	for _, id := range f.union {
		if _, ok := h.router.Shape(id); ok {
			pending = append(pending, id)
		}
	}
	e := &entry{commit: open.commit, last: last, pending: pending, size: entryOverhead + f.size, shapes: f.shapes,
		txn: &stream.Txn{Xid: open.xid, CommitLSN: open.commit, CommitTime: open.commitTime, Changes: f.changes}}
	if last {
		e.end, e.txn.EndLSN = open.end, open.end
	}
	f.parts++
	f.changes, f.shapes, f.size, f.wire = nil, nil, 0, 0
	if len(pending) == 0 {
		return nil // every shape it reached was evicted meanwhile
	}
	return h.enqueue(ctx, cid, e)
}

// abandon drops the open transaction: the stream was cut before its last
// piece (or HandleTxn failed on it) and hands it again from the first. Its parts leave the outboxes;
// a consumer that was written some of them has its stream closed
// (ErrRestarted), so that it drops them and, once reconnected, gets the
// transaction whole from its first part.
func (h *Hub) abandon() {
	open := h.open
	h.open = nil
	for _, cid := range open.order {
		if open.frags[cid].parts == 0 {
			continue
		}
		o := h.outbox(cid, false)
		if o == nil {
			continue
		}
		o.mu.Lock()
		if o.high >= open.commit {
			// Its last part is in: the transaction is whole in this outbox
			// (the failure came while sending others their last part).
			o.mu.Unlock()
			continue
		}
		written := slices.Contains(o.spilled, open.commit)
		var freed int64
		kept := o.entries[:0]
		for _, e := range o.entries {
			if e.commit == open.commit && !e.last {
				freed += e.size
				if o.session != nil && e.seq < o.session.cursor {
					written = true
				}
				continue
			}
			kept = append(kept, e)
		}
		clear(o.entries[len(kept):])
		o.entries = kept
		o.unspill(open.commit)
		if written && o.session != nil {
			o.session.end(ErrRestarted)
			o.session = nil
			h.cutSpilledLocked(o) // another transaction spilled by that stream
		}
		h.freeLocked(o, freed)
		o.mu.Unlock()
		if written {
			h.log.Info().Str("consumer", cid).Stringer("lsn", open.commit).
				Msg("replication stream cut mid-transaction: change stream closed, the transaction is sent again from its first part")
		}
	}
}

// spillLocked drops from the outbox the parts the open stream has written
// of the transaction it is in the middle of (its last part not written
// yet), to make room for the next parts: without it a transaction larger
// than the outbox could never be sent. Parts of transactions written whole
// stay, for a resend. The transaction is marked spilled: should the stream
// end before it is acked, it comes again from the slot (cutSpilledLocked).
// Called with o.mu held; reports whether it freed anything.
func (h *Hub) spillLocked(o *outbox) bool {
	if o.session == nil {
		return false
	}
	// Entries are written in order: the one just before the cursor tells
	// whether the stream is inside a transaction.
	i := sort.Search(len(o.entries), func(i int) bool { return o.entries[i].seq >= o.session.cursor })
	if i == 0 || o.entries[i-1].last {
		return false
	}
	inside := o.entries[i-1].commit
	var freed int64
	kept := o.entries[:0]
	for j, e := range o.entries {
		if j < i && e.commit == inside {
			freed += e.size
			h.spilledParts.Add(1)
			continue
		}
		kept = append(kept, e)
	}
	clear(o.entries[len(kept):])
	o.entries = kept
	if freed > 0 {
		if i, ok := slices.BinarySearch(o.spilled, inside); !ok {
			o.spilled = slices.Insert(o.spilled, i, inside)
		}
	}
	h.freeLocked(o, freed)
	return freed > 0
}

// unspill forgets that commit was spilled (acked whole, or dropped).
func (o *outbox) unspill(commit ledger.LSN) {
	if i, ok := slices.BinarySearch(o.spilled, commit); ok {
		o.spilled = slices.Delete(o.spilled, i, i+1)
	}
}

// cutSpilledLocked runs when a change stream ends: a transaction whose
// first parts were spilled cannot be resent from memory, so the outbox
// gives it up, with everything after it, until a replay from the slot
// brings them again (the transaction is pending, so the slot still has
// it, I1). Called with o.mu held.
func (h *Hub) cutSpilledLocked(o *outbox) {
	if len(o.spilled) == 0 {
		return
	}
	from := h.dropForReplayLocked(o, o.spilled[0]) // the earliest: everything from it on goes
	h.log.Info().Str("consumer", o.id).Stringer("drop_from_lsn", from).
		Msg("change stream ended inside a transaction too large to keep: it will be replayed from the slot")
}

// dropFromLocked removes the entries of transactions from commit from on,
// so that they can be enqueued again (a replay). Called with o.mu held.
func (h *Hub) dropFromLocked(o *outbox, from ledger.LSN) {
	var freed int64
	kept := o.entries[:0]
	for _, e := range o.entries {
		if e.commit >= from {
			freed += e.size
			continue
		}
		kept = append(kept, e)
	}
	clear(o.entries[len(kept):])
	o.entries = kept
	if o.high >= from {
		o.high = from - 1
	}
	h.freeLocked(o, freed)
}

// freeLocked accounts for freed outbox bytes and wakes a HandleTxn waiting
// for room. Called with o.mu held.
func (h *Hub) freeLocked(o *outbox, freed int64) {
	if freed == 0 {
		return
	}
	o.bytes -= freed
	h.outboxBytes.Add(-freed)
	select {
	case o.space <- struct{}{}:
	default:
	}
}

// rowWire is about the bytes of a row in a txn frame.
func rowWire(cols []stream.Column) int64 {
	if cols == nil {
		return 0
	}
	n := int64(10)
	for _, c := range cols {
		n += int64(len(c.Name)+len(c.Value)) + 6
	}
	return n
}
