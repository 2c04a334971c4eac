package deliver

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/route"
	"github.com/ledgerd/ledgerd/stream"
)

// Defaults applied to zero Config fields.
const (
	DefaultOutboxBytes         = 64 << 20
	DefaultSlowConsumerTimeout = 30 * time.Second
	DefaultKeepaliveInterval   = 5 * time.Second
	DefaultFragmentBytes       = 4 << 20
	// maxControl bounds the challenge/evicted frames queued for a consumer
	// whose stream is not open; the oldest are dropped first (the state they
	// announce stays readable through the API).
	maxControl = 1024
	// entryOverhead is the bookkeeping counted per outbox entry, and
	// changeOverhead per change, on top of the row data they hold.
	entryOverhead  = 256
	changeOverhead = 96
)

// Config configures a Hub. Zero values mean the documented default.
type Config struct {
	// Ledger tracks and acks; required.
	Ledger *ledger.Ledger
	// Router maps transactions to shapes; nil means a new, empty one. The Hub
	// keeps it in step with the ledger's shapes (PutShape, RemoveShape, Sync).
	Router *route.Router
	// OutboxBytes bounds each consumer's outbox of delivered, unacked
	// transactions. Default 64 MiB.
	OutboxBytes int64
	// SlowConsumerTimeout is how long a full outbox may pause the stream
	// before the consumer's change stream is closed. It also bounds a single
	// write to a consumer that does not read (each write has at least nine
	// tenths of it). Default 30s.
	SlowConsumerTimeout time.Duration
	// KeepaliveInterval is the longest a change stream stays silent; a
	// keepalive frame is written when nothing else was. Default 5s.
	KeepaliveInterval time.Duration
	// FragmentBytes is about the largest txn frame: the changes of a
	// transaction that reach a consumer are cut into parts of about this
	// size (a single change larger than it is a part of its own). Default
	// 4 MiB.
	FragmentBytes int64
	// Logger receives log lines; a "component" field is added.
	Logger zerolog.Logger
}

// Hub routes transactions to consumers' outboxes and serves their change
// streams. It implements stream.Handler. Create it with New.
type Hub struct {
	cfg    Config
	l      *ledger.Ledger
	router *route.Router
	log    zerolog.Logger
	watch  *ledger.Watch // what Sync looks at

	mu        sync.Mutex
	consumers map[string]*outbox
	closed    bool

	// routeMu makes routing and tracking a transaction atomic with respect
	// to creating a shape (CreateShape): a shape created at processed
	// position P is in the router before any transaction after P is routed,
	// so it cannot miss one (I1).
	routeMu sync.Mutex

	lastCommit ledger.LSN  // stream goroutine only
	prevCommit ledger.LSN  // stream goroutine only: commit LSN of the previous transaction handed over
	restarted  atomic.Bool // the Runner started a new stream: its first transaction begins a pass
	replaying  bool        // stream goroutine only: the stream is re-sending what it sent before
	replay     chan struct{}
	open       *openTxn // stream goroutine only: the transaction being routed in pieces
	spare      *openTxn // stream goroutine only: the last one routed whole, for reuse
	scratch    struct { // stream goroutine only: byConsumer's
		pairs  [][2]string
		shapes []string
		groups []consumerShapes
	}
	nudge atomic.Pointer[atomic.Pointer[stream.Stream]] // the Runner's current stream, told when an ack moved the flush
	held  atomic.Pointer[chan struct{}]                 // HandleTxn waits until it is closed (HoldTxns)

	// batched: the Hub is fed by a Runner's stream, which calls EndBatch
	// after each batch it hands over; waking a consumer's writer then
	// waits for it (see wakeLocked). due are the outboxes to wake.
	batched atomic.Bool
	dueMu   sync.Mutex
	due     []*outbox

	deliveries  atomic.Uint64
	sentBytes   atomic.Uint64
	outboxBytes atomic.Int64
	overflows   atomic.Uint64
	dropped     atomic.Uint64
	slowCloses  atomic.Uint64
	replays     atomic.Uint64
	acks        atomic.Uint64

	overdelivered atomic.Uint64
	parts         atomic.Uint64
	spilledParts  atomic.Uint64
}

// New returns a Hub over the given ledger.
func New(cfg Config) *Hub {
	if cfg.Router == nil {
		cfg.Router = route.New()
	}
	if cfg.OutboxBytes <= 0 {
		cfg.OutboxBytes = DefaultOutboxBytes
	}
	if cfg.SlowConsumerTimeout <= 0 {
		cfg.SlowConsumerTimeout = DefaultSlowConsumerTimeout
	}
	if cfg.KeepaliveInterval <= 0 {
		cfg.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if cfg.FragmentBytes <= 0 {
		cfg.FragmentBytes = DefaultFragmentBytes
	}
	return &Hub{
		cfg:       cfg,
		l:         cfg.Ledger,
		router:    cfg.Router,
		watch:     cfg.Ledger.Watch(),
		log:       cfg.Logger.With().Str("component", "deliver").Logger(),
		consumers: map[string]*outbox{},
		replay:    make(chan struct{}, 1),
	}
}

// Router returns the router the Hub keeps in step with the ledger.
func (h *Hub) Router() *route.Router { return h.router }

// outbox is one consumer's delivered-but-unacked transactions.
type outbox struct {
	id string

	mu          sync.Mutex
	entries     []*entry // commit order
	bytes       int64
	seq         uint64       // seq of the next entry
	high        ledger.LSN   // commit LSN of the last transaction enqueued whole (its last part)
	delivered   ledger.LSN   // commit LSN of the last transaction written whole (its last part) to a stream
	spilled     []ledger.LSN // transactions (sorted) some parts of which were written and dropped from memory (spill), not yet acked
	overflowed  bool         // transactions after dropFrom were dropped; waiting for a replay
	dropFrom    ledger.LSN
	replayAsked bool
	due         bool // in Hub.due: its writer is woken at the end of the batch
	control     [][]byte
	session     *session
	space       chan struct{} // signalled when bytes shrink; the stream goroutine waits on it
	removed     bool
	writing     []*sending // resent transactions being written
}

// sending is a transaction a change stream takes from the outbox again (it
// was written to an earlier stream) and writes outside the outbox lock. An
// ack covering it waits until that write is over before it is answered, so
// that no transaction is written to a consumer after its ack was answered
// (I2). Resends are written one transaction a write: an ack waits for that
// one write, never for a batch behind it that a consumer busy with its ack
// would not read.
type sending struct {
	commit ledger.LSN
	done   chan struct{} // closed once written, or the write failed
}

// entry is one transaction in an outbox, or one part of it: the parts of a
// transaction are consecutive entries, the last one marked last.
type entry struct {
	seq         uint64
	commit, end ledger.LSN  // end is zero on every part but the last
	last        bool        // the transaction's last (or only) part
	txn         *stream.Txn // a copy holding only the changes that reach this consumer
	shapes      [][]string  // for each of its changes, the consumer's shapes reached (sorted)
	// pending are the consumer's shapes that have not acked the
	// transaction (sorted). The last part holds every shape of the
	// transaction, an earlier part those reached up to it, so the last
	// part is always the last to leave the outbox.
	pending []string
	size    int64 // memory held, as counted against Config.OutboxBytes
}

func (e *entry) pendingHas(id string) bool {
	_, ok := slices.BinarySearch(e.pending, id)
	return ok
}

// session is one open change stream.
type session struct {
	wake   chan struct{}
	done   chan struct{}
	err    error
	cursor uint64 // seq of the next entry to write
	// Parts are numbered per stream: the first part of a transaction a
	// stream writes is part 1, whatever parts were acked or written before.
	partOf ledger.LSN
	part   int
}

func (s *session) end(err error) {
	select {
	case <-s.done:
	default:
		s.err = err
		close(s.done)
	}
}

func (s *session) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (h *Hub) outbox(id string, create bool) *outbox {
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.consumers[id]
	if o == nil && create && !h.closed {
		o = &outbox{id: id, space: make(chan struct{}, 1)}
		h.consumers[id] = o
	}
	return o
}

// HandleTxn routes txn, tracks it in the ledger and appends it to the
// outbox of every consumer owning a shape that must receive it. It blocks
// while such an outbox is full, up to Config.SlowConsumerTimeout.
//
// A transaction handed over in pieces (stream.Txn.More) is routed piece by
// piece: changes that reach no shape are dropped at once, and the changes
// of each consumer are cut into parts of about Config.FragmentBytes, each
// appended to its outbox as soon as it is full. A shape is pending on the
// transaction from its first routed piece (ledger.TrackOpen, I1).
func (h *Hub) HandleTxn(ctx context.Context, txn *stream.Txn) error {
	if held := h.held.Load(); held != nil {
		select {
		case <-*held:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if txn.First() {
		if h.open != nil {
			// The stream was cut before the last piece of the open
			// transaction and hands it (or an earlier one) again from its
			// first piece.
			h.abandon()
		}
		h.beginTxn(txn)
	} else if h.open == nil || h.open.commit != txn.CommitLSN {
		return fmt.Errorf("piece %d of transaction %s without its first piece", txn.Part, txn.CommitLSN)
	}
	if len(txn.Relations) > 0 {
		if err := h.evictChangedRelations(txn); err != nil {
			return err
		}
	}
	h.routeMu.Lock()
	res := h.router.Route(txn)
	var targets []string
	if txn.More {
		targets = h.l.TrackOpen(txn.CommitLSN, res.Shapes)
	} else {
		targets = h.l.Track(txn.CommitLSN, txn.EndLSN, res.Shapes)
	}
	h.routeMu.Unlock()
	open := h.open
	if len(targets) > 0 {
		if res.Absent != nil {
			h.countAbsent(&res, targets)
		}
		for _, g := range h.byConsumer(targets) {
			cid, shapes := g.cid, g.shapes
			f := open.frags[cid]
			if f == nil {
				f = &fragment{}
				open.frags[cid] = f
				open.order = append(open.order, cid)
			}
			if err := h.addChanges(ctx, cid, f, txn, &res, shapes); err != nil {
				return err
			}
		}
	}
	if txn.More {
		return nil
	}
	open.end = txn.EndLSN
	sort.Strings(open.order)
	for _, cid := range open.order {
		if err := h.seal(ctx, open, cid, open.frags[cid], true); err != nil {
			return err // still open: abandoned when the stream hands it again
		}
	}
	h.open = nil
	h.spare = open
	return nil
}

// consumerShapes are a transaction's target shapes of one consumer.
type consumerShapes struct {
	cid    string
	shapes []string // sorted
}

// byConsumer groups targets by consumer, consumers and their shapes
// sorted. The groups live in scratch space of the Hub, reused for every
// transaction (stream goroutine only): a transaction reaching one shape
// costs no map and no allocation here.
func (h *Hub) byConsumer(targets []string) []consumerShapes {
	pairs := h.scratch.pairs[:0]
	for _, id := range targets {
		if c := h.router.Consumer(id); c != "" {
			pairs = append(pairs, [2]string{c, id})
		}
	}
	if len(pairs) > 1 {
		slices.SortFunc(pairs, func(a, b [2]string) int {
			if c := strings.Compare(a[0], b[0]); c != 0 {
				return c
			}
			return strings.Compare(a[1], b[1])
		})
	}
	shapes, groups := h.scratch.shapes[:0], h.scratch.groups[:0]
	for i := 0; i < len(pairs); {
		start := len(shapes)
		j := i
		for ; j < len(pairs) && pairs[j][0] == pairs[i][0]; j++ {
			shapes = append(shapes, pairs[j][1])
		}
		// A group made before shapes grew keeps the array it was cut
		// from, which nothing writes again.
		groups = append(groups, consumerShapes{cid: pairs[i][0], shapes: shapes[start:len(shapes):len(shapes)]})
		i = j
	}
	h.scratch.pairs, h.scratch.shapes, h.scratch.groups = pairs, shapes, groups
	return groups
}

// beginTxn starts routing a transaction at its first piece.
func (h *Hub) beginTxn(txn *stream.Txn) {
	restarted := h.restarted.Swap(false) && h.prevCommit != 0
	if restarted || h.prevCommit != 0 && txn.CommitLSN <= h.prevCommit {
		// Commit LSNs rise within one pass over the slot: a step back (or
		// the first transaction of a stream the Runner started again)
		// means a new pass begins here. Only its start may end an
		// overflow, since only the part of the slot read from here on
		// comes again; an outbox that overflows later in the pass must
		// wait for the next one (I1).
		h.replaying = true
		h.replays.Add(1)
		h.onReplay(txn.CommitLSN, restarted)
	}
	h.prevCommit = txn.CommitLSN
	if txn.CommitLSN > h.lastCommit {
		h.lastCommit = txn.CommitLSN
		h.replaying = false
	}
	// The last transaction routed whole lends its openTxn and map: nothing
	// holds them once it is sealed.
	open := h.spare
	h.spare = nil
	switch {
	case open == nil:
		open = &openTxn{frags: map[string]*fragment{}}
	case len(open.frags) > 64:
		open.frags = map[string]*fragment{} // clearing a big map costs its size every time after
	default:
		clear(open.frags)
	}
	*open = openTxn{commit: txn.CommitLSN, xid: txn.Xid, commitTime: txn.CommitTime, frags: open.frags, order: open.order[:0]}
	h.open = open
}

// countAbsent counts the changes routed to a target shape only through an
// absent filter column (route.Result.Absent), once per change and shape.
func (h *Hub) countAbsent(res *route.Result, targets []string) {
	live := make(map[string]struct{}, len(targets))
	for _, id := range targets {
		live[id] = struct{}{}
	}
	var n uint64
	for _, ids := range res.Absent {
		for _, id := range ids {
			if _, ok := live[id]; ok {
				n++
			}
		}
	}
	h.overdelivered.Add(n)
}

// onReplay runs when the stream starts a new pass over the slot at commit
// LSN from. Overflowed outboxes whose first dropped transaction is not
// before from stop dropping, since the pass brings back every transaction
// they dropped (those are pending, so the slot's confirmed position is not
// past them). With fromSlot, the pass is a new stream that started at the
// slot's confirmed position: every overflowed outbox stops dropping, since
// what it dropped before from is no longer pending for any live shape (the
// confirmed position passed it: its shapes were evicted), and the rest
// comes again.
func (h *Hub) onReplay(from ledger.LSN, fromSlot bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range h.consumers {
		o.mu.Lock()
		if o.overflowed && (fromSlot || o.dropFrom >= from) {
			o.overflowed = false
			o.replayAsked = false
			h.log.Info().Str("consumer", o.id).Stringer("from_lsn", o.dropFrom).Msg("replaying dropped transactions from the slot")
		}
		o.mu.Unlock()
	}
}

// enqueue appends e to the consumer's outbox, waiting for room up to
// Config.SlowConsumerTimeout.
func (h *Hub) enqueue(ctx context.Context, cid string, e *entry) error {
	o := h.outbox(cid, true)
	if o == nil {
		return ErrClosed
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		if o.removed {
			return nil
		}
		if e.commit <= o.high {
			return nil // in the outbox already or acked: a replay from the slot
		}
		if o.overflowed {
			h.dropped.Add(1)
			return nil
		}
		if o.bytes+e.size > h.cfg.OutboxBytes/2 {
			// Past half the outbox, the parts written of a transaction
			// the stream is inside give way first: a large transaction
			// then holds about half the outbox, not all of it.
			h.spillLocked(o)
		}
		if o.bytes == 0 || o.bytes+e.size <= h.cfg.OutboxBytes {
			break
		}
		if h.spillLocked(o) {
			continue
		}
		if timer == nil {
			timer = time.NewTimer(h.cfg.SlowConsumerTimeout)
		}
		if o.session != nil {
			// Full: what is queued must be written now, not at the end
			// of the batch, or nothing would make room.
			o.session.poke()
		}
		space := o.space
		o.mu.Unlock()
		var timedOut bool
		select {
		case <-space:
		case <-timer.C:
			timedOut = true
		case <-ctx.Done():
			o.mu.Lock()
			return ctx.Err()
		}
		o.mu.Lock()
		if timedOut && !o.removed && o.bytes > 0 && o.bytes+e.size > h.cfg.OutboxBytes && !h.spillLocked(o) {
			h.overflowLocked(o, e.commit)
			h.dropped.Add(1)
			return nil
		}
	}
	e.seq = o.seq
	o.seq++
	o.entries = append(o.entries, e)
	o.bytes += e.size
	h.outboxBytes.Add(e.size)
	if e.last {
		o.high = e.commit
	}
	h.wakeLocked(o)
	return nil
}

// wakeLocked tells o's change stream that there is more to write. A Hub
// fed by a Runner's stream wakes it once the stream has handed over the
// batch it read (EndBatch), not at every transaction: while a backlog
// streams in, the writer then runs once and writes the batch in one
// write, instead of being woken (a thread wake-up, on another core) for
// each transaction. Called with o.mu held.
func (h *Hub) wakeLocked(o *outbox) {
	if o.session == nil {
		return
	}
	if !h.batched.Load() {
		o.session.poke()
		return
	}
	if !o.due {
		o.due = true
		h.dueMu.Lock()
		h.due = append(h.due, o)
		h.dueMu.Unlock()
	}
}

var _ stream.Batcher = (*Hub)(nil)

// EndBatch wakes the change streams of the outboxes that got transactions
// since the last call (stream.Batcher).
func (h *Hub) EndBatch() {
	h.dueMu.Lock()
	due := h.due
	h.due = nil
	h.dueMu.Unlock()
	for _, o := range due {
		o.mu.Lock()
		o.due = false
		if o.session != nil {
			o.session.poke()
		}
		o.mu.Unlock()
	}
}

// overflowLocked gives up on keeping o complete: its stream is closed and
// transactions from commit on are dropped until a replay from the slot.
//
// The parts of commit (and of any transaction after it) already in the
// outbox leave it too, and so does a transaction whose first parts were
// spilled: the replay brings each of them again whole, from its first part,
// so no consumer is ever resent a transaction in part.
func (h *Hub) overflowLocked(o *outbox, commit ledger.LSN) {
	full := o.bytes
	commit = h.dropForReplayLocked(o, commit)
	if o.session != nil {
		o.session.end(ErrSlowConsumer)
		o.session = nil
		h.slowCloses.Add(1)
	}
	h.log.Warn().Str("consumer", o.id).Int64("outbox_bytes", full).Stringer("drop_from_lsn", commit).
		Dur("slow_consumer_timeout", h.cfg.SlowConsumerTimeout).
		Msg("outbox full past the slow-consumer timeout: stream closed, later transactions will be replayed from the slot")
}

// dropForReplayLocked drops o's transactions from the one at from on, or
// from the first one whose parts were spilled when that is earlier, until
// a replay from the slot brings them again whole. It returns where the drop
// starts.
func (h *Hub) dropForReplayLocked(o *outbox, from ledger.LSN) ledger.LSN {
	if len(o.spilled) > 0 && o.spilled[0] < from {
		from = o.spilled[0]
	}
	o.spilled = nil
	h.dropFromLocked(o, from)
	o.overflowed = true
	o.dropFrom = from
	o.replayAsked = false
	h.overflows.Add(1)
	return from
}

// Idle passes the server WAL end to the ledger (nothing in flight).
func (h *Hub) Idle(walEnd ledger.LSN) { h.l.Idle(walEnd) }

// FlushLSN returns the position that may be confirmed to Postgres.
func (h *Hub) FlushLSN() ledger.LSN { return h.l.FlushLSN() }

// streamRestarted tells the Hub that the Runner started a new stream: the
// next transaction begins a new pass over the slot, even when its commit
// LSN is past every one handed before.
func (h *Hub) streamRestarted() { h.restarted.Store(true) }

// HoldTxns makes HandleTxn wait until release is called (safe to call more
// than once), as it waits for room in an outbox: the stream keeps its
// connection alive and confirms nothing new. A start holds the stream while
// it fills the router, so that the replication connection is set up and
// Postgres decodes meanwhile, and yet nothing is routed before the router
// holds every shape (I1).
func (h *Hub) HoldTxns() (release func()) {
	ch := make(chan struct{})
	h.held.Store(&ch)
	return sync.OnceFunc(func() {
		h.held.CompareAndSwap(&ch, nil)
		close(ch)
	})
}

// Replay delivers a value when an overflowed consumer has caught up and the
// transactions it missed must be read from the slot again: the owner of the
// stream should restart it (the slot resumes at its confirmed position,
// which is never past a dropped transaction).
func (h *Hub) Replay() <-chan struct{} { return h.replay }

// pruneLocked removes shape from the pending list of every entry up to upTo
// (or of all entries) and drops the entries left with no pending shape. It
// wakes a HandleTxn waiting for room and, once an overflowed outbox is half
// empty, asks for a replay from the slot. Called with o.mu held.
func (h *Hub) pruneLocked(o *outbox, upTo ledger.LSN, all bool, shape string) {
	h.dropSettledLocked(o, func(e *entry) {
		if all || e.commit <= upTo {
			if i, ok := slices.BinarySearch(e.pending, shape); ok {
				p := make([]string, 0, len(e.pending)-1)
				p = append(p, e.pending[:i]...)
				p = append(p, e.pending[i+1:]...)
				e.pending = p
			}
		}
	})
}

// dropSettledLocked applies settle to every entry of the outbox and drops
// those left with no pending shape. Called with o.mu held.
func (h *Hub) dropSettledLocked(o *outbox, settle func(e *entry)) {
	kept := o.entries[:0]
	var freed int64
	for _, e := range o.entries {
		settle(e)
		if len(e.pending) == 0 {
			freed += e.size
			if e.last {
				o.unspill(e.commit) // acked whole: nothing of it is needed again
			}
			continue
		}
		kept = append(kept, e)
	}
	h.keepLocked(o, kept, freed)
}

// pruneAckedLocked is pruneLocked for every shape of one ack call at once
// (acked: shape -> the position it acked): one pass over the outbox however
// many shapes the call names. An ack of a consumer's thousand shapes would
// otherwise walk its outbox a thousand times, on the path every ack takes.
// Called with o.mu held.
func (h *Hub) pruneAckedLocked(o *outbox, acked map[string]ledger.LSN) {
	if len(acked) == 0 {
		return
	}
	var high ledger.LSN
	for _, lsn := range acked {
		high = max(high, lsn)
	}
	h.dropSettledLocked(o, func(e *entry) {
		if e.commit <= high {
			e.pending = withoutAcked(e.pending, e.commit, acked)
		}
	})
}

// withoutAcked returns pending (sorted) without the shapes that acked
// commit or later; pending itself when there are none. pending is never
// changed in place: a new slice replaces it, as in pruneLocked.
func withoutAcked(pending []string, commit ledger.LSN, acked map[string]ledger.LSN) []string {
	drop := func(id string) bool {
		lsn, ok := acked[id]
		return ok && commit <= lsn
	}
	n := 0
	if len(acked) < len(pending) {
		for id, lsn := range acked {
			if commit <= lsn {
				if _, ok := slices.BinarySearch(pending, id); ok {
					n++
				}
			}
		}
	} else {
		for _, id := range pending {
			if drop(id) {
				n++
			}
		}
	}
	if n == 0 {
		return pending
	}
	p := make([]string, 0, len(pending)-n)
	for _, id := range pending {
		if !drop(id) {
			p = append(p, id)
		}
	}
	return p
}

// keepLocked makes kept (a prefix of o.entries' array) the outbox, freed
// being the bytes of the entries it no longer holds. It wakes a HandleTxn
// waiting for room and, once an overflowed outbox is half empty, asks for
// a replay from the slot. Called with o.mu held.
func (h *Hub) keepLocked(o *outbox, kept []*entry, freed int64) {
	clear(o.entries[len(kept):])
	o.entries = kept
	if freed > 0 {
		o.bytes -= freed
		h.outboxBytes.Add(-freed)
		select {
		case o.space <- struct{}{}:
		default:
		}
		h.askReplayLocked(o)
	}
}

// askReplayLocked asks for a replay from the slot once an overflowed
// outbox is half empty. Called with o.mu held.
func (h *Hub) askReplayLocked(o *outbox) {
	if o.overflowed && !o.replayAsked && o.bytes <= h.cfg.OutboxBytes/2 {
		o.replayAsked = true
		select {
		case h.replay <- struct{}{}:
		default:
		}
		h.log.Info().Str("consumer", o.id).Msg("overflowed consumer caught up: asking for a replay from the slot")
	}
}

// Close ends every change stream. Calls after Close find no consumers.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for id, o := range h.consumers {
		o.mu.Lock()
		if o.session != nil {
			o.session.end(ErrClosed)
		}
		o.removed = true
		h.outboxBytes.Add(-o.bytes)
		o.mu.Unlock()
		delete(h.consumers, id)
	}
}

// rowSize is the memory a decoded row holds.
func rowSize(cols []stream.Column) int64 {
	n := int64(24 * len(cols))
	for _, c := range cols {
		n += int64(len(c.Name)+len(c.Value)) + 40
	}
	return n
}
