package deliver

import (
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/route"
)

// CreateShape creates the shape in the ledger (ledger.PutShape) and starts
// routing to it in one step with respect to HandleTxn: the shape receives
// every transaction committed after its StartLSN, none is routed in between
// without it (I1).
func (h *Hub) CreateShape(spec ledger.ShapeSpec) (ledger.Shape, bool, error) {
	h.routeMu.Lock()
	defer h.routeMu.Unlock()
	sh, created, err := h.l.PutShape(spec)
	if err != nil {
		return sh, created, err
	}
	h.PutShape(sh)
	return sh, created, nil
}

// CreateShapes is CreateShape for many shapes, created by one ledger call
// (one group commit); each has its own answer (ledger.PutShapes).
func (h *Hub) CreateShapes(specs []ledger.ShapeSpec) ([]ledger.ShapeResult, error) {
	h.routeMu.Lock()
	defer h.routeMu.Unlock()
	res, err := h.l.PutShapes(specs)
	if err != nil {
		return nil, err
	}
	h.router.PutAll(len(res), func(yield func(route.Shape) bool) {
		for _, r := range res {
			if r.Err == nil && !yield(route.Shape(r.Shape.ShapeSpec)) {
				return
			}
		}
	})
	return res, nil
}

// PutShape starts routing to a shape the ledger created (or redefined).
// Shapes created while the stream runs should go through CreateShape.
func (h *Hub) PutShape(sh ledger.Shape) {
	h.router.Put(route.Shape(sh.ShapeSpec))
}

// RemoveShape stops routing to a shape the ledger evicted: its transactions
// leave its consumer's outbox and, when reason is set, an evicted frame is
// queued on the consumer's stream. If the id was created again since the
// eviction (a concurrent PUT), the new shape is live and keeps its routing
// (I1).
func (h *Hub) RemoveShape(id string, reason ledger.Reason) {
	h.removeShape(id, reason, true)
}

// removeShape is RemoveShape; with onlyIfGone it first checks, atomically
// with respect to CreateShape, that the ledger no longer has the shape, so
// that a shape created meanwhile is not dropped from routing (I1).
func (h *Hub) removeShape(id string, reason ledger.Reason, onlyIfGone bool) {
	h.routeMu.Lock()
	sh, ok := h.router.Shape(id)
	if ok && onlyIfGone {
		if _, live := h.l.ShapeDef(id); live {
			ok = false
		}
	}
	if ok {
		h.router.Remove(id)
	}
	h.routeMu.Unlock()
	if !ok {
		return
	}
	if o := h.outbox(sh.Consumer, false); o != nil {
		o.mu.Lock()
		h.pruneLocked(o, 0, true, id)
		o.mu.Unlock()
	}
	if reason != "" {
		h.control(sh.Consumer, appendControl(nil, "evicted", id, string(reason)))
	}
}

// DropConsumer ends the consumer's stream with ErrConsumerGone and forgets
// its outbox: its lease is gone or it was released, and its shapes with it.
func (h *Hub) DropConsumer(id string) {
	h.mu.Lock()
	o := h.consumers[id]
	delete(h.consumers, id)
	h.mu.Unlock()
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.removed = true
	if o.session != nil {
		o.session.end(ErrConsumerGone)
		o.session = nil
	}
	h.outboxBytes.Add(-o.bytes)
	o.bytes = 0
	o.entries = nil
	select {
	case o.space <- struct{}{}:
	default:
	}
}

// Sync brings the router and the outboxes in step with the ledger: shapes
// created elsewhere are routed, shapes evicted elsewhere (the reconciler)
// are removed with an evicted frame, and consumers that are gone are
// dropped. Call it at start-up and after every reconcile pass; it is
// idempotent. It looks only at the shapes and consumers the ledger reports
// changed since the last call (ledger.Watch); the first call, and one after
// more changes than the feed remembers, looks at everything.
func (h *Hub) Sync() {
	ch := h.watch.Drain()
	if ch.All {
		h.syncAll()
		return
	}
	if syncHook != nil {
		syncHook()
	}
	for _, id := range ch.Shapes {
		sh, live := h.l.ShapeDef(id)
		cur, routed := h.router.Shape(id)
		switch {
		case live && (!routed || !ledger.ShapeSpec(cur).SameDefinition(sh.ShapeSpec)):
			h.syncShape(id)
		case !live && routed:
			h.removeShape(id, h.evictedReason(id), true)
		}
	}
	for _, id := range ch.Consumers {
		if c, ok := h.l.Consumer(id); !ok || c.Gone {
			h.DropConsumer(id)
		}
	}
}

func (h *Hub) evictedReason(id string) ledger.Reason {
	if ts, ok := h.l.Tombstone(id); ok {
		return ts.Reason
	}
	return ledger.ReasonReleased
}

// syncAll is Sync over every shape and consumer.
func (h *Hub) syncAll() {
	if h.router.Len() == 0 {
		h.load()
		h.dropGone()
		return
	}
	specs := h.l.ShapeSpecs()
	live := make(map[string]struct{}, len(specs))
	if syncHook != nil {
		syncHook()
	}
	for _, sp := range specs {
		live[sp.ID] = struct{}{}
		cur, ok := h.router.Shape(sp.ID)
		if !ok || !ledger.ShapeSpec(cur).SameDefinition(sp) {
			h.syncShape(sp.ID)
		}
	}
	for _, id := range h.router.IDs() {
		if _, ok := live[id]; ok {
			continue
		}
		h.removeShape(id, h.evictedReason(id), true)
	}
	h.dropGone()
}

// load routes every shape of the ledger into an empty router, as at start,
// in one step with respect to CreateShape: no definition read can be
// replaced meanwhile (I1). A shape evicted or bound meanwhile is in the
// change feed, and the next Sync applies it.
func (h *Hub) load() {
	if syncHook != nil {
		syncHook()
	}
	h.routeMu.Lock()
	defer h.routeMu.Unlock()
	// The router is filled under the ledger's lock (the router calls
	// nothing back): at start nothing waits for it yet.
	h.router.PutAll(h.l.LiveShapes(), func(yield func(route.Shape) bool) {
		h.l.EachShapeSpec(func(sp ledger.ShapeSpec) bool { return yield(route.Shape(sp)) })
	})
}

// dropGone drops the outboxes of consumers that are gone.
func (h *Hub) dropGone() {
	h.mu.Lock()
	ids := make([]string, 0, len(h.consumers))
	for id := range h.consumers {
		ids = append(ids, id)
	}
	h.mu.Unlock()
	for _, id := range ids {
		if c, ok := h.l.Consumer(id); !ok || c.Gone {
			h.DropConsumer(id)
		}
	}
}

// syncHook, when set (tests only), runs in Sync between reading the
// ledger's shapes and applying them.
var syncHook func()

// syncShape routes the ledger's current definition of id, atomically with
// respect to CreateShape. Sync works from a snapshot: an id deleted and
// created again with another definition since must not get its old one
// back, or the new shape's transactions would go untracked (I1).
func (h *Hub) syncShape(id string) {
	h.routeMu.Lock()
	defer h.routeMu.Unlock()
	sh, ok := h.l.ShapeDef(id)
	if !ok {
		return // evicted since: the next Sync removes it
	}
	if cur, ok := h.router.Shape(id); ok && ledger.ShapeSpec(cur).SameDefinition(sh.ShapeSpec) {
		return
	}
	h.PutShape(sh)
}

// Stats are the Hub's counters and gauges.
type Stats struct {
	Deliveries     uint64 // txn frames written to streams (resends included)
	DeliveredBytes uint64 // bytes of those frames
	Acks           uint64 // shape acks applied
	OutboxBytes    int64  // bytes held by every outbox
	OutboxTxns     int    // entries held by every outbox
	Streams        int    // open change streams
	Overflows      uint64 // outboxes that overflowed
	Dropped        uint64 // transactions dropped from an overflowed outbox (replayed later)
	SlowCloses     uint64 // streams closed by the slow-consumer timeout
	Replays        uint64 // restarts of the stream observed (replays from the slot)
	// Overdelivered counts changes routed to a filtered shape only because
	// a filter column was absent from them (key-only or missing old tuple,
	// unchanged TOAST value): possible over-deliveries, the price of
	// routing without REPLICA IDENTITY FULL.
	Overdelivered uint64
	// Parts counts txn frames written as parts of a transaction sent in
	// several frames (resends included); SpilledParts the parts let go
	// from an outbox once written, to make room for the rest of their
	// transaction.
	Parts, SpilledParts uint64
}

// ConsumerStats describe one consumer's outbox.
type ConsumerStats struct {
	OutboxTxns  int
	OutboxBytes int64
	Streaming   bool
	Overflowed  bool
	Delivered   ledger.LSN // commit LSN of the last transaction written to its stream
}

// Stats returns the current counters.
func (h *Hub) Stats() Stats {
	st := Stats{
		Deliveries:     h.deliveries.Load(),
		DeliveredBytes: h.sentBytes.Load(),
		Acks:           h.acks.Load(),
		OutboxBytes:    h.outboxBytes.Load(),
		Overflows:      h.overflows.Load(),
		Dropped:        h.dropped.Load(),
		SlowCloses:     h.slowCloses.Load(),
		Replays:        h.replays.Load(),
		Overdelivered:  h.overdelivered.Load(),
		Parts:          h.parts.Load(),
		SpilledParts:   h.spilledParts.Load(),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range h.consumers {
		o.mu.Lock()
		st.OutboxTxns += len(o.entries)
		if o.session != nil {
			st.Streams++
		}
		o.mu.Unlock()
	}
	return st
}

// Consumer returns the outbox state of one consumer.
func (h *Hub) Consumer(id string) (ConsumerStats, bool) {
	o := h.outbox(id, false)
	if o == nil {
		return ConsumerStats{}, false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return ConsumerStats{OutboxTxns: len(o.entries), OutboxBytes: o.bytes, Streaming: o.session != nil,
		Overflowed: o.overflowed, Delivered: o.delivered}, true
}
