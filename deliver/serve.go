package deliver

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"time"

	"github.com/ledgerd/ledgerd/internal/cork"
)

// Flusher is what Serve writes to: an io.Writer whose Flush pushes the
// written frames to the consumer. An http.ResponseWriter qualifies through
// NewHTTPWriter.
type Flusher interface {
	io.Writer
	Flush() error
}

type httpWriter struct {
	rc   *http.ResponseController
	w    http.ResponseWriter
	cork *cork.Conn // nil: each net/http write reaches the socket
}

// NewHTTPWriter adapts a streaming HTTP answer for Serve; writes get a
// deadline so that a consumer that stops reading cannot hold a goroutine.
// When the request's connection can be corked (internal/cork), what is
// written between two flushes reaches the socket in one write: net/http
// would split a batch over 4 KiB into three.
func NewHTTPWriter(w http.ResponseWriter, r *http.Request) Flusher {
	h := &httpWriter{rc: http.NewResponseController(w), w: w}
	if r.ProtoMajor == 1 {
		// HTTP/2 writes frames from the connection's own goroutine.
		h.cork = cork.FromContext(r.Context())
	}
	return h
}

func (h *httpWriter) Write(p []byte) (int, error) {
	if h.cork != nil {
		h.cork.Cork()
	}
	n, err := h.w.Write(p)
	if err != nil && h.cork != nil {
		_ = h.cork.Uncork()
	}
	return n, err
}

func (h *httpWriter) Flush() error {
	err := h.rc.Flush()
	if h.cork != nil {
		if uerr := h.cork.Uncork(); err == nil {
			err = uerr
		}
	}
	return err
}

func (h *httpWriter) SetWriteDeadline(t time.Time) error {
	return h.rc.SetWriteDeadline(t)
}

type deadliner interface{ SetWriteDeadline(time.Time) error }

// maxWriteBatch bounds the frames written between two flushes.
const maxWriteBatch = 256 << 10

// Serve writes the consumer's change stream to w until ctx ends (nil), the
// Hub ends it (ErrReplaced, ErrSlowConsumer, ErrConsumerGone, ErrClosed) or
// a write fails. It first writes the whole outbox, oldest first: a
// reconnecting consumer gets every transaction it has not acked again.
// Only one stream per consumer is open at a time; a new one replaces the
// old.
func (h *Hub) Serve(ctx context.Context, consumer string, w Flusher) error {
	o := h.outbox(consumer, true)
	if o == nil {
		return ErrClosed
	}
	s := &session{wake: make(chan struct{}, 1), done: make(chan struct{})}
	o.mu.Lock()
	if o.removed {
		o.mu.Unlock()
		return ErrConsumerGone
	}
	if o.session != nil {
		o.session.end(ErrReplaced)
	}
	// A transaction spilled by an earlier stream, whichever way that one
	// ended, cannot be resent from memory: never let this stream start it
	// from a later part.
	h.cutSpilledLocked(o)
	o.session = s
	// An outbox that overflowed while the consumer was away asks for its
	// replay now that someone reads it.
	h.askReplayLocked(o)
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		if o.session == s {
			o.session = nil
			h.cutSpilledLocked(o)
		}
		o.mu.Unlock()
	}()

	dl, _ := w.(deadliner)
	var armed time.Time // when the write deadline was last moved
	write := func(b []byte) error {
		// The deadline moves once a tenth of it has passed, not with every
		// frame: under live traffic that is a timer re-armed per
		// transaction. Each write has at least nine tenths of it.
		if now := time.Now(); dl != nil && now.Sub(armed) >= h.cfg.SlowConsumerTimeout/10 {
			_ = dl.SetWriteDeadline(now.Add(h.cfg.SlowConsumerTimeout))
			armed = now
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		return w.Flush()
	}
	// Answer headers at once, so the consumer knows the stream is open.
	if err := w.Flush(); err != nil {
		return err
	}
	keepalive := time.NewTicker(h.cfg.KeepaliveInterval)
	defer keepalive.Stop()
	wrote := false
	// Frames are encoded here, on the consumer's own goroutine, rather than
	// on the stream goroutine: fan-out to many consumers encodes in parallel,
	// and an entry whose shapes partly acked is resent for the rest only.
	var buf []byte
	for {
		buf = buf[:0]
		n := 0
		o.mu.Lock()
		select {
		case <-s.done:
			// Ended (replaced, restarted, overflowed) while writing: not a
			// frame more, or a transaction sent again could follow its
			// first parts on the same stream.
			o.mu.Unlock()
			return s.err
		default:
		}
		for _, c := range o.control {
			buf = append(buf, c...)
		}
		o.control = nil
		var wr *sending
		i := sort.Search(len(o.entries), func(i int) bool { return o.entries[i].seq >= s.cursor })
		for ; i < len(o.entries) && len(buf) < maxWriteBatch; i++ {
			e := o.entries[i]
			if e.commit <= o.delivered {
				// Written to an earlier stream: resent one transaction a
				// write, and an ack of it waits for that write (I2).
				if n > 0 {
					break
				}
				wr = &sending{commit: e.commit, done: make(chan struct{})}
				o.writing = append(o.writing, wr)
				buf = appendTxnFrame(buf, e, h.countPart(e, s.nextPart(e)))
				n++
				s.cursor = e.seq + 1
				break
			}
			buf = appendTxnFrame(buf, e, h.countPart(e, s.nextPart(e)))
			n++
			s.cursor = e.seq + 1
			if e.last {
				// Acks of the transaction are valid only once its last
				// part is written.
				o.delivered = e.commit
			}
		}
		o.mu.Unlock()
		if len(buf) > 0 {
			if wr != nil && beforeWrite != nil {
				beforeWrite()
			}
			h.deliveries.Add(uint64(n))
			h.sentBytes.Add(uint64(len(buf)))
			err := write(buf)
			if wr != nil {
				o.written(wr)
			}
			if err != nil {
				return err
			}
			// A HandleTxn waiting for room may spill the parts just written.
			select {
			case o.space <- struct{}{}:
			default:
			}
			wrote = true
			if cap(buf) > 4*maxWriteBatch {
				buf = nil // one huge transaction: do not keep its buffer
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.done:
			return s.err
		case <-s.wake:
			// Let the stream goroutine add what it is decoding, so that a
			// busy stream is written in fewer, larger writes.
			runtime.Gosched()
		case <-keepalive.C:
			if !wrote {
				if err := write(keepaliveLine); err != nil {
					return err
				}
			}
			wrote = false
		}
	}
}

// nextPart returns the part number e is written as on this stream: parts
// are numbered from 1 per stream, whatever was written or acked before.
func (s *session) nextPart(e *entry) int {
	if s.partOf != e.commit {
		s.partOf, s.part = e.commit, 0
	}
	s.part++
	return s.part
}

// countPart counts e as a part when it is not written whole.
func (h *Hub) countPart(e *entry, part int) int {
	if part > 1 || !e.last {
		h.parts.Add(1)
	}
	return part
}

// written ends the write of a resent transaction: acks waiting for it may
// be answered.
func (o *outbox) written(wr *sending) {
	o.mu.Lock()
	o.writing = slices.DeleteFunc(o.writing, func(x *sending) bool { return x == wr })
	o.mu.Unlock()
	close(wr.done)
}

// beforeWrite, when set (tests only), runs in Serve between taking a resent
// transaction from the outbox and writing it.
var beforeWrite func()

// Challenge queues a challenge frame for the shape on its consumer's stream
// (the progress probe: docs/api.md, "Challenges").
func (h *Hub) Challenge(consumer, shape string) {
	h.control(consumer, appendControl(nil, "challenge", shape, ""))
}

// control queues a frame for the consumer's stream, ahead of transactions
// not yet written. A consumer the hub holds nothing for gets none: what the
// frame says is also in its next heartbeat answer.
func (h *Hub) control(consumer string, frame []byte) {
	o := h.outbox(consumer, false)
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.control) >= maxControl {
		o.control = o.control[1:]
	}
	o.control = append(o.control, frame)
	if o.session != nil {
		o.session.poke()
	}
}
