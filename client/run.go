package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

// Handler processes one transaction (Run) or one part of a transaction
// (RunParts). Returning nil marks it done: once a transaction's last part
// is done, its shapes are acked. An error stops Run (the transaction is not
// acked and will be delivered again). A handler may take as long as it
// needs: Run keeps reading the stream meanwhile and answers the daemon's
// challenges. The Txn and its changes are the handler's to keep or change:
// Run takes what it needs of them before.
type Handler func(ctx context.Context, txn *Txn) error

// RunOptions tune Run. Zero values mean the documented default.
type RunOptions struct {
	// HeartbeatInterval is the period of lease heartbeats. Default TTL/3.
	HeartbeatInterval time.Duration
	// Inventory, when set, is called before each heartbeat for the list of
	// shapes the consumer still holds (the inventory probe: docs/api.md, "Leases").
	Inventory func() []string
	// ReconnectMin and ReconnectMax bound the backoff between stream
	// reconnects. Defaults 100ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	// OnEvicted is called when the daemon reports one of the shapes
	// evicted, from the goroutine reading the stream or the one sending
	// heartbeats, concurrently with the handler.
	OnEvicted func(shape, reason string)
	// OnAck is called after each durable ack batch with the daemon's flush
	// position.
	OnAck func(acks map[string]ledger.LSN, flush ledger.LSN)
	// OnError is called with errors Run recovers from (broken stream,
	// failed heartbeat or ack).
	OnError func(err error)
	// IdleTimeout is how long the stream may stay silent (the daemon sends
	// a keepalive at least every 5s) before it is taken for dead and
	// reconnected. Default 30s.
	IdleTimeout time.Duration
	// AckInterval is the time between two ack requests: acks handled
	// meanwhile go in one request, so the daemon commits (and syncs) its
	// ledger once for them. A burst of 1,000 transactions or more is acked
	// as soon as it ends (5 ms without a new one), without waiting out the
	// interval. Default DefaultAckInterval; negative means no wait.
	AckInterval time.Duration
	// MaxQueueBytes bounds the frames read ahead of the handler, in bytes
	// of the stream: past it, reading waits for the handler. Default 16 MiB.
	MaxQueueBytes int64
}

// DefaultMaxQueueBytes is the default of RunOptions.MaxQueueBytes.
const DefaultMaxQueueBytes = 16 << 20

// Run streams the consumer's changes to h until ctx ends (then it returns
// nil after a last ack), the handler fails (its error), or the lease is gone
// (an *Error with status 410).
//
// h gets whole transactions: the parts of a transaction the daemon sends in
// several frames (over its -fragment-bytes) are put together first, so a
// transaction is held whole in memory. RunParts hands the parts over as
// they come, in bounded memory.
//
// The stream is read on its own goroutine and the handler called on
// another, in commit order, so that a challenge is answered while a
// transaction is being handled: a slow handler is not a stalled consumer.
// Transactions read ahead of the handler are held in memory; the daemon
// sends no more than its outbox of unacked transactions (-outbox-bytes), so
// that bounds them. When the stream breaks, the reader reconnects at once,
// without waiting for the handler: what was read and not handled comes again
// on the next stream. A transaction that comes again after it was handled
// (it was resent while being handled, or before its ack was answered) is not
// handled again, only acked again.
//
// Acks are batched: one ack request is in flight at a time and the next one
// carries everything handled meanwhile, coalesced to the highest LSN per
// shape (see RunOptions.AckInterval).
func (k *Consumer) Run(ctx context.Context, h Handler, opt RunOptions) error {
	return k.run(ctx, h, false, opt)
}

// RunParts is Run with h called for each part of a transaction as it is
// read (Txn.Part from 1, Txn.Last on the last part; a transaction sent in
// one frame is part 1 and last), so that a consumer stays within bounded
// memory however large a transaction is. The transaction is acked once,
// after h accepted its last part. When the stream breaks inside a
// transaction, the daemon sends it again from part 1: h then gets part 1 of
// a transaction whose earlier parts it was given, and must start that
// transaction over. Part 1 of another transaction before the last part
// means the transaction in hand will not be completed (every shape it
// reached was evicted meanwhile): drop it. A transaction sent again after
// it was handled whole is not handled again, only acked.
func (k *Consumer) RunParts(ctx context.Context, h Handler, opt RunOptions) error {
	return k.run(ctx, h, true, opt)
}

// DefaultAckInterval is RunOptions.AckInterval when unset. Under live
// traffic every ack request costs the daemon a request and a ledger commit
// (two fsyncs) whatever it carries: at 10ms, four consumers of 1,000
// transactions a second made acks the daemon's largest cost, and at 50ms
// the commits were still a fifth of it. Acks only release the slot's WAL
// and outbox room (megabytes: the stream does not wait for them), so
// holding them 100ms costs nothing a consumer sees.
const DefaultAckInterval = 100 * time.Millisecond

// An ack request goes out before the interval is up when a burst ends: no
// transaction was handled for quietAckGap, and burstAckTxns were since the
// last request or in it. A backlog the consumer has just caught up on is
// then confirmed, and its WAL released, at once rather than up to an
// interval later. Each such request follows burstAckTxns transactions in
// its own batch or the one before, so acks cost at most one request per
// interval plus two per burstAckTxns transactions; steady traffic of fewer
// than burstAckTxns transactions an interval is paced as before.
const (
	burstAckTxns = 1000
	quietAckGap  = 5 * time.Millisecond
)

// ackInterval is RunOptions.AckInterval d with its default applied.
func ackInterval(d time.Duration) time.Duration {
	if d == 0 {
		return DefaultAckInterval
	}
	return d
}

func (k *Consumer) run(ctx context.Context, h Handler, parts bool, opt RunOptions) error {
	if opt.HeartbeatInterval <= 0 {
		opt.HeartbeatInterval = max(k.ttl/3, 100*time.Millisecond)
		if k.ttl <= 0 {
			opt.HeartbeatInterval = 3 * time.Second
		}
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = 30 * time.Second
	}
	opt.AckInterval = ackInterval(opt.AckInterval)
	if opt.ReconnectMin <= 0 {
		opt.ReconnectMin = 100 * time.Millisecond
	}
	if opt.ReconnectMax <= 0 {
		opt.ReconnectMax = 5 * time.Second
	}
	if opt.MaxQueueBytes <= 0 {
		opt.MaxQueueBytes = DefaultMaxQueueBytes
	}
	report := func(err error) {
		if opt.OnError != nil && err != nil {
			opt.OnError(err)
		}
	}
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	ack := &acker{k: k, wake: make(chan struct{}, 1), burst: make(chan struct{}, 1), pending: map[string]ledger.LSN{}, handled: map[string]ledger.LSN{},
		onAck: opt.OnAck, report: report, every: opt.AckInterval,
		fatal: func(err error) { cancel(err) }}
	w := &work{wake: make(chan struct{}, 1), room: make(chan struct{}, 1), max: opt.MaxQueueBytes, parts: parts}
	var wg sync.WaitGroup
	wg.Go(func() { ack.loop(ctx) })
	wg.Go(func() { k.heartbeats(ctx, opt, report, func(err error) { cancel(err) }) })
	wg.Go(func() {
		if err := w.handle(ctx, h, ack); err != nil {
			cancel(&handlerError{err})
		}
	})

	err := k.streamLoop(ctx, w, opt, ack, report)
	cancel(err)
	wg.Wait()
	// A last ack of what was handled, so the next run does not get it again.
	final, fc := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	ack.flush(final)
	fc()
	var he *handlerError
	switch cause := context.Cause(ctx); {
	case errors.As(cause, &he):
		return he.err
	case parent.Err() != nil:
		return nil
	default:
		return cause
	}
}

func (k *Consumer) streamLoop(ctx context.Context, w *work, opt RunOptions, ack *acker, report func(error)) error {
	backoff := opt.ReconnectMin
	for {
		s, err := k.OpenStream(ctx)
		if err == nil {
			backoff = opt.ReconnectMin
			err = k.readStream(ctx, s, w, opt, ack)
			s.Close()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if IsGone(err) {
			return err
		}
		var ae *Error
		if errors.As(err, &ae) && (ae.Status == 401 || ae.Status == 403 || ae.Status == 404) {
			return err // wrong token or lease: reconnecting cannot help
		}
		report(err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, opt.ReconnectMax)
	}
}

type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }

// readStream reads one change stream until it ends, handing transactions
// to w and answering challenges at once.
func (k *Consumer) readStream(ctx context.Context, s *Stream, w *work, opt RunOptions, ack *acker) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	// What was read and not handled comes again on the next stream.
	defer w.reset()
	// A daemon that vanished without closing the connection (a partition)
	// is noticed by its silence: keepalives stop.
	var silent atomic.Bool
	idle := time.AfterFunc(opt.IdleTimeout, func() { silent.Store(true); s.Close() })
	defer idle.Stop()
	for {
		f, txn, err := s.Next()
		if err != nil {
			if silent.Load() {
				return fmt.Errorf("client: the change stream was silent for %v; reconnecting", opt.IdleTimeout)
			}
			if errors.Is(err, io.EOF) {
				return errors.New("client: the daemon ended the change stream")
			}
			return err
		}
		switch f.Type {
		case wire.FrameTxn:
			if !w.add(ctx, txn, false) {
				return ctx.Err()
			}
		case wire.FrameChallenge:
			// Alive and working: a shape with a transaction queued or
			// being handled says so with a defer; what is handled is
			// acked. A shape with neither is deferred too: its
			// transaction has not reached this stream yet (the daemon
			// writes challenges ahead of transactions it has not
			// written).
			if w.busy(f.Shape) || !ack.holds(f.Shape) {
				go func() {
					if err := k.Defer(ctx, []string{f.Shape}); err != nil && ctx.Err() == nil && opt.OnError != nil {
						opt.OnError(err)
					}
				}()
			}
			ack.poke()
		case wire.FrameEvicted:
			if opt.OnEvicted != nil {
				opt.OnEvicted(f.Shape, f.Reason)
			}
		}
		// While the stream holds more whole frames, the handler is woken
		// once for all of them, not per transaction: before the reader
		// may wait for the daemon. The silence is timed from there too:
		// moving a timer per frame took a tenth of a busy consumer's CPU.
		if !s.more() {
			w.signal()
			idle.Reset(opt.IdleTimeout)
		}
	}
}

// work holds the transaction frames read from the change stream and not
// yet handled, and the transaction being handled, between the goroutine
// reading the stream and the one calling the handler.
type work struct {
	mu      sync.Mutex
	queue   []*Txn
	bytes   int64    // frame bytes in queue
	current []string // the shapes of the part being handled
	inTxn   []string // shapes of the transaction being handled, parts so far
	wake    chan struct{}
	room    chan struct{}
	max     int64
	parts   bool // RunParts: the handler gets each part
}

// push queues t, waiting while the queue holds MaxQueueBytes, and wakes
// the handler. It reports false when ctx ended.
func (w *work) push(ctx context.Context, t *Txn) bool { return w.add(ctx, t, true) }

// add is push, waking the handler only if wake is set or the queue is
// full: the reader leaves it asleep while more frames are already read,
// and wakes it once for them all (see readStream).
func (w *work) add(ctx context.Context, t *Txn, wake bool) bool {
	for {
		w.mu.Lock()
		if len(w.queue) == 0 || w.bytes+t.size <= w.max {
			w.queue = append(w.queue, t)
			w.bytes += t.size
			w.mu.Unlock()
			break
		}
		w.mu.Unlock()
		w.signal() // only the handler makes room
		select {
		case <-ctx.Done():
			return false
		case <-w.room:
		}
	}
	if wake {
		w.signal()
	}
	return true
}

func (w *work) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// pop takes the next frame off the queue, or nil, with the shapes it
// reaches: taken before the handler gets it, which may change it.
func (w *work) pop() (*Txn, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return nil, nil
	}
	t := w.queue[0]
	w.queue[0] = nil
	w.queue = w.queue[1:]
	w.bytes -= t.size
	w.current = t.Shapes()
	select {
	case w.room <- struct{}{}:
	default:
	}
	return t, w.current
}

// reset drops what was read and not handled: the stream ended, and the
// daemon sends it again on the next one.
func (w *work) reset() {
	w.mu.Lock()
	clear(w.queue)
	w.queue = w.queue[:0]
	w.bytes = 0
	w.mu.Unlock()
}

// busy reports whether a transaction reaching shape is queued or being
// handled.
func (w *work) busy(shape string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if slices.Contains(w.current, shape) || slices.Contains(w.inTxn, shape) {
		return true
	}
	for _, t := range w.queue {
		if reaches(t, shape) {
			return true
		}
	}
	return false
}

func reaches(t *Txn, shape string) bool {
	for _, ch := range t.Changes {
		if slices.Contains(ch.Shapes, shape) {
			return true
		}
	}
	return false
}

// handle calls h on each transaction (or, with parts, each part) in turn
// until ctx ends (nil) or h fails (its error). A transaction whose every
// shape was handled at or past it (it came again on a new stream) is not
// handled again, only acked again. A part 1 starts a transaction over: the
// stream broke inside it and it is sent again whole; a part without the
// parts before it (its stream broke) is dropped.
func (w *work) handle(ctx context.Context, h Handler, ack *acker) error {
	var cur *Txn // the transaction being put together (Run) or handled (RunParts)
	handled := false
	for {
		t, shapes := w.pop()
		if t == nil {
			select {
			case <-ctx.Done():
				return nil
			case <-w.wake:
			}
			continue
		}
		if t.Part == 0 {
			t.Part, t.Last = 1, true
		}
		if !w.parts && t.Part == 1 && t.Last {
			// A transaction in one frame, the common case: nothing to put
			// together, so the frame's Txn is handed over as it is, for
			// the handler to keep or change. The ack and a challenge
			// meanwhile (busy) go by its LSN and shapes, taken before.
			if cur != nil {
				cur = nil
				w.setInTxn(nil)
			}
			lsn := t.LSN
			var err error
			if !ack.covers(t) {
				err = h(ctx, t)
			}
			if err != nil {
				w.done()
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			// Acked before it stops being the one handled: a challenge
			// meanwhile finds it either handled or held for the ack.
			ack.add(lsn, shapes)
			w.done()
			continue
		}
		switch {
		case t.Part == 1:
			cur = &Txn{LSN: t.LSN, Xid: t.Xid, CommitTime: t.CommitTime}
			handled = false
			w.setInTxn(nil)
		case cur == nil || cur.LSN != t.LSN || t.Part != cur.Part+1:
			w.done()
			continue
		}
		cur.Part = t.Part
		var err error
		if w.parts {
			// Each part to the handler; cur keeps only the shapes, as one
			// change per shape, for the ack.
			if len(t.Changes) > 0 && !ack.covers(t) || t.Last && handled {
				err = h(ctx, t)
				handled = true
			}
			for _, s := range shapes {
				if !reaches(cur, s) {
					cur.Changes = append(cur.Changes, wire.Change{Shapes: []string{s}})
				}
			}
		} else {
			cur.Changes = append(cur.Changes, t.Changes...)
			if t.Last {
				cur.EndLSN, cur.Last = t.EndLSN, true
				if !ack.covers(cur) {
					// The handler gets cur's changes to keep or change:
					// cur keeps only their shapes from here on.
					whole := *cur
					whole.Part = 1
					cur.Changes = shapeChanges(cur.Shapes())
					err = h(ctx, &whole)
				}
			}
		}
		w.setInTxn(cur.Shapes())
		w.done()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if t.Last {
			ack.add(cur.LSN, cur.Shapes())
			cur = nil
			w.setInTxn(nil)
		}
	}
}

// shapeChanges is one change per shape, that reaches only it: what the
// ack of a transaction needs of it.
func shapeChanges(shapes []string) []wire.Change {
	out := make([]wire.Change, len(shapes))
	for i, s := range shapes {
		out[i] = wire.Change{Shapes: []string{s}}
	}
	return out
}

func (w *work) done() {
	w.mu.Lock()
	w.current = nil
	w.mu.Unlock()
}

func (w *work) setInTxn(shapes []string) {
	w.mu.Lock()
	w.inTxn = shapes
	w.mu.Unlock()
}

func (k *Consumer) heartbeats(ctx context.Context, opt RunOptions, report, fatal func(error)) {
	t := time.NewTicker(opt.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var inv []string
		if opt.Inventory != nil {
			inv = opt.Inventory()
			if inv == nil {
				inv = []string{}
			}
		}
		res, err := k.Heartbeat(ctx, inv)
		if err != nil {
			if IsGone(err) {
				fatal(err)
				return
			}
			report(err)
			continue
		}
		if opt.OnEvicted != nil {
			for _, e := range res.Evicted {
				opt.OnEvicted(e.Shape, e.Reason)
			}
		}
	}
}

// acker batches acks: one request in flight, the next carrying everything
// handled meanwhile.
type acker struct {
	k      *Consumer
	mu     sync.Mutex
	wake   chan struct{}
	onAck  func(map[string]ledger.LSN, ledger.LSN)
	report func(error)
	fatal  func(error)
	every  time.Duration
	// burst is signalled when added reaches burstAckTxns.
	burst chan struct{}

	added   int  // transactions added since the last request
	busy    bool // the last request carried burstAckTxns or more
	pending map[string]ledger.LSN
	handled map[string]ledger.LSN // per shape, the highest transaction handled
}

// holds reports whether an ack of shape is waiting to be sent.
func (a *acker) holds(shape string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.pending[shape]
	return ok
}

// covers reports whether every shape t reaches was handled at or past it:
// the transaction came again on a new stream (it was resent while it was
// being handled, or its ack was not answered yet). Handling it again would
// be a duplicate; acking it again is all it needs, and an ack the daemon
// refused because it restarted since is sent anew this way.
func (a *acker) covers(t *Txn) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ch := range t.Changes {
		for _, s := range ch.Shapes {
			if a.handled[s] < t.LSN {
				return false
			}
		}
	}
	return len(t.Changes) > 0
}

// add holds an ack of the transaction at lsn for each of shapes.
func (a *acker) add(lsn ledger.LSN, shapes []string) {
	a.mu.Lock()
	for _, s := range shapes {
		if lsn > a.pending[s] {
			a.pending[s] = lsn
		}
		if lsn > a.handled[s] {
			a.handled[s] = lsn
		}
	}
	a.added++
	if a.added == burstAckTxns {
		select {
		case a.burst <- struct{}{}:
		default:
		}
	}
	a.mu.Unlock()
	a.poke()
}

func (a *acker) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *acker) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		}
		start := time.Now()
		a.flush(ctx)
		if !a.pause(ctx, a.every-time.Since(start)) {
			return
		}
	}
}

// pause waits d before the next request, or less when a burst ends (see
// burstAckTxns). It reports false when ctx ended.
func (a *acker) pause(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	var tick *time.Ticker // while a burst goes on
	var quiet <-chan time.Time
	// burst starts the ticks, or starts them over: the first is a whole
	// gap after last was taken.
	burst := func() {
		if tick == nil {
			tick = time.NewTicker(quietAckGap)
			quiet = tick.C
		} else {
			tick.Reset(quietAckGap)
		}
	}
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	last, busy := a.counts()
	if busy {
		burst()
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-a.burst:
			last, _ = a.counts()
			burst()
		case <-quiet:
			n, busy := a.counts()
			if n == last && n > 0 && (busy || n >= burstAckTxns) {
				return true
			}
			last = n
		}
	}
}

// counts returns the transactions added since the last request, and
// whether that request carried burstAckTxns or more.
func (a *acker) counts() (added int, busy bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.added, a.busy
}

func (a *acker) flush(ctx context.Context) {
	a.mu.Lock()
	batch := a.pending
	a.pending = map[string]ledger.LSN{}
	a.busy = a.added >= burstAckTxns
	a.added = 0
	a.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	res, err := a.k.Ack(ctx, batch)
	switch {
	case err == nil:
		if a.onAck != nil {
			flush, _ := ledger.ParseLSN(res.FlushLSN)
			a.onAck(batch, flush)
		}
	case IsCode(err, wire.CodeAckBeyondDelivered):
		// The daemon restarted since it sent some of these; it will send
		// them again. An ack is all or nothing, so the rest of the batch,
		// handled since, was refused with them: ack each shape alone, or a
		// shape with no later transaction would stay pending for good.
		a.report(err)
		if len(batch) > 1 {
			for s, l := range batch {
				a.ackOne(ctx, s, l)
			}
		}
	case IsCode(err, wire.CodeShapeGone):
		// The shapes were evicted; the daemon also says so on the stream.
		a.report(err)
	case IsGone(err):
		a.fatal(err)
	default:
		// Keep them for the next batch unless newer acks replaced them.
		a.mu.Lock()
		for s, l := range batch {
			if l > a.pending[s] {
				a.pending[s] = l
			}
		}
		a.mu.Unlock()
		a.report(err)
		if ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
			a.poke()
		}
	}
}

// ackOne acks one shape of a batch the daemon refused as a whole.
func (a *acker) ackOne(ctx context.Context, shape string, lsn ledger.LSN) {
	one := map[string]ledger.LSN{shape: lsn}
	res, err := a.k.Ack(ctx, one)
	switch {
	case err == nil:
		if a.onAck != nil {
			flush, _ := ledger.ParseLSN(res.FlushLSN)
			a.onAck(one, flush)
		}
	case IsCode(err, wire.CodeAckBeyondDelivered), IsCode(err, wire.CodeShapeGone):
		// Sent again after the restart, or evicted: nothing is owed.
	case IsGone(err):
		a.fatal(err)
	default:
		a.mu.Lock()
		if lsn > a.pending[shape] {
			a.pending[shape] = lsn
		}
		a.mu.Unlock()
		a.report(err)
		a.poke()
	}
}
