package ledger

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Group commit. Acks, heartbeats and ticks are applied in memory at once and
// queued in the batch being filled; one committer goroutine cuts the batch and
// writes it in one bbolt transaction (split only when it exceeds MaxBatch),
// then wakes everyone waiting on it. Many concurrent Sync callers share one
// commit.
//
// The flush position offered to Postgres follows the "cut snapshot" rule
// (I6): when a batch is cut, under the mutex, the in-memory safe LSN at that
// instant reflects exactly the acks in this batch and in earlier ones (all
// committed before it) and evictions already committed. Once the batch
// commits, that value is backed by committed state. It is written to meta in
// the same transaction as the acks it depends on, and FlushLSN reports only
// what meta holds, so the reported flush never passes committed state and
// never goes backwards, not even across a crash.

// batch is the set of changes committed by one group commit.
type batch struct {
	id        uint64
	shapes    []*shapeState   // shapes whose flushed LSN changed (coalesced via shapeState.dirty)
	consumers map[string]bool // consumers whose lease state changed
	tick      time.Time       // reconcile tick to record, zero if none
	events    []Event         // journal events recorded by other components
	created   []*shapeState   // shapes created by PutShapes: live once this batch commits
	summaries []Event         // their journal events; like them, dropped if the commit fails
	wantFlush LSN             // a committed-backed flush position to record (FlushLSN idle path)
	force     bool            // a Sync is waiting: commit even if empty
	retry     bool            // carries a failed batch: commit even if empty
	done      chan struct{}   // closed once committed (or failed)
	err       error           // set before done is closed
}

// tag is the batch's mark in shapeState.dirty: never 0, and other than
// the tag of the batch before or after it. A shape's mark is always the
// filling batch's or the committing one's, so 32 bits tell them apart.
func (b *batch) tag() uint32 { return uint32(b.id) | 1<<31 }

func newBatch(id uint64) *batch {
	return &batch{id: id, done: make(chan struct{})}
}

func (b *batch) empty() bool {
	return len(b.shapes) == 0 && len(b.consumers) == 0 && len(b.events) == 0 && len(b.created) == 0 && b.tick.IsZero() && b.wantFlush == 0 && !b.force && !b.retry
}

// flushOnly reports whether the batch does nothing but record a flush
// position.
func (b *batch) flushOnly() bool {
	return b.wantFlush != 0 && len(b.shapes) == 0 && len(b.consumers) == 0 && len(b.events) == 0 &&
		len(b.created) == 0 && b.tick.IsZero() && !b.force && !b.retry
}

func (b *batch) ops() int { return len(b.shapes) + len(b.consumers) + len(b.events) + len(b.created) }

// queued signals the committer after an operation was added to the fill
// batch. Caller holds mu.
func (l *Ledger) queued() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
	if l.fill.ops() >= l.cfg.MaxBatch {
		select {
		case l.full <- struct{}{}:
		default:
		}
	}
}

// markShape queues s's new flushed LSN. Caller holds mu.
func (l *Ledger) markShape(s *shapeState) {
	if s.dirty == l.fill.tag() {
		return
	}
	s.dirty = l.fill.tag()
	l.fill.shapes = append(l.fill.shapes, s)
	l.queued()
}

// markConsumer queues the consumer's lease state. Caller holds mu.
func (l *Ledger) markConsumer(id string) {
	if l.fill.consumers == nil {
		l.fill.consumers = make(map[string]bool)
	}
	l.fill.consumers[id] = true
	l.queued()
}

// Retrying failed group commits. A commit fails when the file cannot be
// written (a full disk, an I/O error); its changes stay queued and nothing is
// reported beyond the last commit that succeeded (I6). Retrying at once would
// spin: the committer waits commitRetryMin after the first failure, twice as
// long after each further one, at most commitRetryMax, and logs the first
// failure, then at most every failureLogEvery, then the recovery.
const (
	commitRetryMin  = 100 * time.Millisecond
	commitRetryMax  = 5 * time.Second
	failureLogEvery = 30 * time.Second
)

// run is the committer goroutine.
func (l *Ledger) run() {
	defer close(l.done)
	// One timer for the life of the committer, not one per batch.
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-l.kick:
		case <-l.stop:
			l.commitOnce()
			return
		}
		l.wait(t)
		// Whatever accumulated while a batch was being written has waited
		// long enough: commit it straight away, unless commits are failing
		// or it only records a flush position (its kick is pending: it
		// waits for FlushRecordGap).
		for first := true; ; first = false {
			if !first && l.holdFlushOnly() {
				break
			}
			done, err := l.commitOnce()
			if !done {
				break
			}
			if err != nil && !l.backoff() {
				// Stopping: one last attempt, as on any stop.
				l.commitOnce()
				return
			}
		}
	}
}

// wait lets the fill batch gather more changes before it is committed:
// CommitDelay, or not at all once it is full. A batch that only records a
// new flush position (flushOnly) waits until FlushRecordGap has passed since
// the previous commit; a change that joins it meanwhile ends that longer
// wait.
func (l *Ledger) wait(t *time.Timer) {
	for {
		l.mu.Lock()
		full := l.fill.ops() >= l.cfg.MaxBatch
		flushOnly := l.fill.flushOnly()
		d := l.cfg.CommitDelay
		if flushOnly {
			d = max(d, l.lastCommit.Add(l.cfg.FlushRecordGap).Sub(time.Now()))
		}
		l.mu.Unlock()
		if full {
			return
		}
		var kick <-chan struct{}
		if flushOnly {
			kick = l.kick
		}
		t.Reset(d)
		select {
		case <-t.C:
			return
		case <-l.full:
		case <-l.stop:
		case <-kick:
			t.Stop()
			continue
		}
		t.Stop()
		return
	}
}

// holdFlushOnly reports whether the fill batch only records a flush
// position and FlushRecordGap has not passed since the last commit.
func (l *Ledger) holdFlushOnly() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fill.flushOnly() && time.Since(l.lastCommit) < l.cfg.FlushRecordGap
}

// backoff waits before the next attempt after a failed commit. It returns
// false when the ledger is closing.
func (l *Ledger) backoff() bool {
	l.mu.Lock()
	n := l.failure.failures
	l.mu.Unlock()
	wait := commitRetryMax
	if n > 0 && n <= 6 {
		wait = min(commitRetryMin<<(n-1), commitRetryMax)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.stop:
		return false
	}
}

type shapeWrite struct {
	id      string
	gen     uint64
	flushed LSN
	lastAck int64
	event   bool
}

// commitOnce cuts the fill batch and commits it. It reports whether there
// was anything to commit, and the commit's error.
func (l *Ledger) commitOnce() (bool, error) {
	l.mu.Lock()
	b := l.fill
	if b.empty() {
		l.mu.Unlock()
		return false, nil
	}
	l.fill = newBatch(b.id + 1)
	l.inflight = b
	now := l.now()
	sCut := l.t.safe()
	writes := make([]shapeWrite, 0, len(b.shapes))
	nowNs := now.UnixNano()
	if nowNs-l.ackEvWindow >= int64(ackEventEvery) {
		l.ackEvWindow, l.ackEvCount = nowNs, 0
		for s, at := range l.ackEvents {
			if nowNs-at >= int64(ackEventEvery) {
				delete(l.ackEvents, s)
			}
		}
	}
	for _, s := range b.shapes {
		w := shapeWrite{id: s.id, gen: s.gen, flushed: s.flushed, lastAck: s.lastAck}
		if at, ok := l.ackEvents[s]; l.ackEvCount < ackEventsPerWindow && (!ok || nowNs-at >= int64(ackEventEvery)) {
			w.event = true
			if l.ackEvents == nil {
				l.ackEvents = map[*shapeState]int64{}
			}
			l.ackEvents[s] = nowNs
			l.ackEvCount++
		}
		if s.dirty == b.tag() {
			s.dirty = 0
		}
		writes = append(writes, w)
	}
	cons := make([]Consumer, 0, len(b.consumers))
	for id := range b.consumers {
		if c := l.consumers[id]; c != nil {
			cons = append(cons, cloneConsumer(c))
		}
	}
	events := b.events
	m := l.meta
	m.LastFlush = max(l.persistedFlush, sCut, b.wantFlush)
	m.Position = max(l.t.position, l.startFloor, m.Position)
	if !b.tick.IsZero() {
		m.Tick = b.tick
	}
	fault := l.fault
	prev := l.meta
	prev.LastFlush = l.persistedFlush
	l.mu.Unlock()

	began := time.Now()
	err := l.writeBatch(writes, cons, b.created, append(slices.Clip(events), b.summaries...), m, prev, now, fault)
	took := time.Since(began)

	l.mu.Lock()
	l.inflight = nil
	l.lastCommit = time.Now()
	l.stats.Commits++
	l.stats.LastCommitDuration = took
	l.stats.LastBatchOps = len(writes) + len(cons) + len(events) + len(b.created)
	if err == nil {
		for _, s := range b.created {
			l.t.add(s)
			l.shapeChanged(s.id)
		}
		if f := l.failure; !f.since.IsZero() {
			l.log.Info().Uint64("failed_commits", f.failures).Dur("failing_for", now.Sub(f.since)).
				Msg("group commit recovered")
		}
		l.failure = commitFailure{}
		l.durableSafe = max(l.durableSafe, sCut)
		l.persistedFlush = m.LastFlush
		l.meta.LastFlush, l.meta.Position, l.meta.Tick = m.LastFlush, m.Position, m.Tick
	} else {
		l.stats.CommitErrors++
		l.commitFailed(err, now, len(writes))
		// Requeue: the changes are still in memory and must reach the file,
		// and so must the positions and tick the batch carried.
		for _, w := range writes {
			if s := l.t.shapes.Get(w.id); s != nil && s.gen == w.gen {
				l.markShape(s)
			}
		}
		for _, c := range cons {
			l.markConsumer(c.ID)
		}
		l.fill.events = append(l.fill.events, events...)
		l.fill.wantFlush = max(l.fill.wantFlush, b.wantFlush)
		if b.tick.After(l.fill.tick) {
			l.fill.tick = b.tick
		}
		l.fill.retry = true
	}
	l.mu.Unlock()
	b.err = err
	close(b.done)
	return true, err
}

// commitFailed records a failed commit and logs it at a bounded rate: the
// first failure of a run, then at most every failureLogEvery. Caller holds
// mu.
func (l *Ledger) commitFailed(err error, now time.Time, shapes int) {
	f := &l.failure
	f.failures++
	f.err = err
	if f.since.IsZero() {
		f.since, f.logged = now, now
		l.log.Error().Err(err).Int("shapes", shapes).Dur("retry_in", commitRetryMin).
			Msg("group commit failed; acks are not durable until it succeeds, retrying with backoff")
		return
	}
	if now.Sub(f.logged) >= failureLogEvery {
		f.logged = now
		l.log.Error().Err(err).Uint64("failed_commits", f.failures).Dur("failing_for", now.Sub(f.since)).
			Msg("group commit still failing")
	}
}

// writeBatch writes one batch: chunks of at most MaxBatch records, the meta
// record (with the cut's flush position) in the last one. Earlier chunks
// record only the new processed position in the previous meta record, so a
// crash between chunks never leaves a shape flushed beyond the processed
// position the file records.
func (l *Ledger) writeBatch(writes []shapeWrite, cons []Consumer, created []*shapeState, events []Event, m, prev Meta, now time.Time, fault func() error) error {
	for first := true; first || len(writes) > 0 || len(cons) > 0; first = false {
		n := min(len(writes), l.cfg.MaxBatch)
		chunk := writes[:n]
		writes = writes[n:]
		k := min(len(cons), l.cfg.MaxBatch-n)
		cchunk := cons[:k]
		cons = cons[k:]
		last := len(writes) == 0 && len(cons) == 0
		err := guard(func() error {
			return l.db.Update(func(tx *bolt.Tx) error {
				if fault != nil {
					if err := fault(); err != nil {
						return err
					}
				}
				j := newJournal(tx, now)
				if err := writeShapes(tx, j, chunk); err != nil {
					return err
				}
				if err := writeConsumers(tx, cchunk); err != nil {
					return err
				}
				if last {
					if err := writeCreated(tx, created); err != nil {
						return err
					}
					for _, e := range events {
						if err := j.add(e); err != nil {
							return err
						}
					}
					// Keep the journal bounded even without reconcile ticks.
					if _, err := trimJournal(tx, now, l.cfg.JournalMaxEvents, l.cfg.JournalMaxAge); err != nil {
						return err
					}
					return putMeta(tx, m)
				}
				mid := prev
				mid.Position = m.Position
				return putMeta(tx, mid)
			})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// writeShapes patches the flushed LSN and last-ack time of each shape record
// in place. A record that is gone or has another generation was evicted (or
// evicted and created again) after the ack: it is left alone, so a late ack
// can never resurrect an evicted shape (I4).
func writeShapes(tx *bolt.Tx, j *journal, ws []shapeWrite) error {
	bk := tx.Bucket(bucketShapes)
	for _, w := range ws {
		v, err := get(bk, []byte(w.id), true)
		if err != nil {
			return fmt.Errorf("shape %q: %w", w.id, err)
		}
		if len(v) < shapeHeaderLen || binary.BigEndian.Uint64(v[offGen:]) != w.gen {
			continue
		}
		if LSN(binary.BigEndian.Uint64(v[offFlushed:])) >= w.flushed {
			continue // I6: a shape's durable flushed LSN never goes backwards
		}
		nv := make([]byte, len(v))
		copy(nv, v)
		binary.BigEndian.PutUint64(nv[offFlushed:], uint64(w.flushed))
		binary.BigEndian.PutUint64(nv[offLastAck:], uint64(w.lastAck))
		if err := put(bk, []byte(w.id), nv); err != nil {
			return err
		}
		if w.event {
			if err := j.add(Event{Kind: EventAcked, Shape: w.id, LSN: w.flushed}); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeConsumers stores lease state. A record whose epoch changed or that was
// marked gone since the batch was cut is left alone: a heartbeat must not
// revive a consumer released or expired in between.
func writeConsumers(tx *bolt.Tx, cs []Consumer) error {
	bk := tx.Bucket(bucketConsumers)
	for i := range cs {
		c := &cs[i]
		old, err := get(bk, []byte(c.ID), true)
		if err != nil {
			return fmt.Errorf("consumer %q: %w", c.ID, err)
		}
		if old == nil {
			continue
		}
		prev, err := decodeConsumer([]byte(c.ID), old)
		if err != nil {
			return err
		}
		if prev.Epoch != c.Epoch || prev.Gone {
			continue
		}
		if err := put(bk, []byte(c.ID), encodeConsumer(c)); err != nil {
			return err
		}
	}
	return nil
}

// Sync returns once every change applied before the call (acks, heartbeats)
// is committed to the file, and the flush position they support is recorded.
// Concurrent callers share one commit.
func (l *Ledger) Sync(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	b := l.fill
	if b.empty() && l.inflight == nil && l.t.safe() <= l.persistedFlush {
		l.mu.Unlock()
		return nil
	}
	b.force = true
	l.queued()
	l.mu.Unlock()
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// FlushLSN returns the position that may be reported to Postgres as
// write/flush/apply: the flush position recorded in the file by the last
// group commit. It never goes backwards, not even across restarts, and never
// exceeds the safe LSN of committed state (I6).
//
// When no ack is queued or being written, the in-memory safe LSN is backed by
// committed state; if it is ahead, FlushLSN asks for it to be recorded and a
// later call reports it: a commit later, at most FlushRecordGap after the
// previous commit.
func (l *Ledger) FlushLSN() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	cand := l.durableSafe
	if len(l.fill.shapes) == 0 && l.inflight == nil && !l.closed {
		cand = max(cand, l.t.safe())
	}
	if cand > l.persistedFlush && cand > l.fill.wantFlush && !l.closed {
		// The committer was told when the batch first wanted a flush
		// recorded; it records the latest position when it commits.
		first := l.fill.wantFlush == 0
		l.fill.wantFlush = cand
		if first {
			l.queued()
		}
	}
	return l.persistedFlush
}

// commitFailure is the state of a run of failed group commits. Caller holds
// mu.
type commitFailure struct {
	since    time.Time // first failure of the run; zero while commits succeed
	failures uint64    // consecutive failed commits
	err      error     // the last failure
	logged   time.Time // when the run was last logged
}

// CommitHealth says whether group commits are failing (a full disk, an I/O
// error): while they are, acks are not durable and the reported flush
// position stands still (I6), so the daemon is not ready.
type CommitHealth struct {
	Failing  bool
	Since    time.Time // when the current run of failures began
	Failures uint64    // consecutive failed commits
	Err      error     // the last failure
}

// CommitHealth returns the state of group commits.
func (l *Ledger) CommitHealth() CommitHealth {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.failure
	return CommitHealth{Failing: !f.since.IsZero(), Since: f.since, Failures: f.failures, Err: f.err}
}
