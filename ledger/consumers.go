package ledger

import (
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Consumers hold leases. A lease is live while the consumer streams or until
// ExpiresAt = last heartbeat + TTL. Registration and the end of a consumer
// (release, expiry) are committed before they are acknowledged; heartbeats
// and stream open/close are applied in memory and persisted by the group
// commit, coalesced, so they cost no fsync each.

// cloneConsumer copies c. The inventory is shared, not copied: a heartbeat
// replaces the list, never changes it in place, and a reader of a copy must
// not change it either. A thousand-shape list copied for every look at the
// consumer would cost more than the look.
func cloneConsumer(c *Consumer) Consumer {
	return *c
}

// live reports whether c holds a lease now. The lease is judged on the
// monotonic clock: a wall clock step neither ends nor extends it (I3, I5).
func (l *Ledger) live(c *Consumer) bool {
	return !c.Gone && (c.Streaming || l.mono() < c.leaseEnd)
}

// renew starts the lease's TTL again at now.
func (l *Ledger) renew(c *Consumer, now time.Time) {
	c.ExpiresAt = now.Add(c.TTL).UTC()
	c.leaseEnd = l.mono() + c.TTL
}

// view is the public copy of c, its ExpiresAt moved to when the lease ends
// by the wall clock now. Caller holds mu.
func (l *Ledger) view(c *Consumer) Consumer {
	out := cloneConsumer(c)
	if !c.Gone && c.leaseEnd != 0 {
		out.ExpiresAt = l.now().Add(c.leaseEnd - l.mono()).UTC()
	}
	return out
}

// Register gives the consumer a new lease: a new random token and the next
// epoch, expiring after TTL without heartbeats. It is ErrConsumerExists while
// another live lease holds the id. A consumer that registers again after its
// lease ran out (or after it was gone) keeps the id; shapes it still owns stay
// with it.
func (l *Ledger) Register(spec ConsumerSpec) (Consumer, error) {
	if err := validID("consumer", spec.ID); err != nil {
		return Consumer{}, err
	}
	if spec.TTL < 0 {
		return Consumer{}, fmt.Errorf("%w: consumer %q: negative ttl %s", ErrInvalid, spec.ID, spec.TTL)
	}
	if spec.TTL == 0 {
		spec.TTL = l.cfg.DefaultTTL
	}
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return Consumer{}, ErrClosed
	}
	now := l.now()
	var epoch uint64
	if old := l.consumers[spec.ID]; old != nil {
		if l.live(old) {
			l.mu.Unlock()
			return Consumer{}, fmt.Errorf("%w: consumer %q until %s", ErrConsumerExists, spec.ID, old.ExpiresAt.UTC().Format(time.RFC3339Nano))
		}
		epoch = old.Epoch
	}
	l.mu.Unlock()

	token := newLease()
	c := &Consumer{
		ID: spec.ID, leaseHash: hashLease(token), Epoch: epoch + 1, TTL: spec.TTL, PID: spec.PID, ProcStart: spec.ProcStart,
		Host: spec.Host, RegisteredAt: now.UTC(), LastHeartbeat: now.UTC(), HeartbeatAt: now.UTC(), ExpiresAt: now.Add(spec.TTL).UTC(),
	}
	c.leaseEnd = l.mono() + spec.TTL
	err := guard(func() error {
		return l.db.Update(func(tx *bolt.Tx) error {
			if err := put(tx.Bucket(bucketConsumers), []byte(c.ID), encodeConsumer(c)); err != nil {
				return err
			}
			return newJournal(tx, now).add(Event{Kind: EventRegistered, Consumer: c.ID,
				Detail: fmt.Sprintf("epoch %d, ttl %s, host %q, pid %d", c.Epoch, c.TTL, c.Host, c.PID)})
		})
	})
	if err != nil {
		return Consumer{}, fmt.Errorf("registering consumer %q: %w", spec.ID, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.consumers[c.ID]
	l.consumers[c.ID] = c
	if old != nil {
		l.leaseChanged(old)
	}
	l.consumerChanged(c)
	out := cloneConsumer(c)
	out.Lease = token // the only copy of the token that leaves the ledger
	return out, nil
}

// checkLease is CheckLease with mu held.
func (l *Ledger) checkLease(id, lease string) (*Consumer, error) {
	c := l.consumers[id]
	switch {
	case c == nil:
		return nil, fmt.Errorf("%w: consumer %q", ErrNotFound, id)
	case c.Gone:
		return c, &GoneError{Consumer: id, Reason: c.GoneReason, At: c.GoneAt}
	case !c.leaseHash.matches(lease):
		return c, fmt.Errorf("%w: consumer %q (epoch %d)", ErrWrongLease, id, c.Epoch)
	}
	return c, nil
}

// CheckLease verifies a lease token: ErrNotFound, *GoneError (with the
// reason), ErrWrongLease for a stale or foreign token.
func (l *Ledger) CheckLease(id, lease string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.checkLease(id, lease)
	return err
}

// Heartbeat extends the lease to now + TTL. A non-nil inventory is the list
// of shapes the consumer still holds; it is kept with the time it came and
// the previous heartbeat's time, so the reconciler judges only shapes created
// before that previous heartbeat. The heartbeat is durable with the next group
// commit. A lease past its expiry that the reconciler has not ended yet is
// renewed: the process is evidently alive, and its token still fences it.
// A heartbeat that arrives while the consumer's end, or the eviction of one
// of its shapes, is being committed waits for the outcome.
func (l *Ledger) Heartbeat(id, lease string, inventory []string) (Consumer, error) {
	now := l.now().UTC()
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.waitConsumer(id) { // its end or a shape's eviction is being committed: answer with the outcome
	}
	if l.closed {
		return Consumer{}, ErrClosed
	}
	c, err := l.checkLease(id, lease)
	if err != nil {
		return Consumer{}, err
	}
	// PrevHeartbeat is the previous heartbeat call, not a stream open or
	// close in between: the inventory is judged only for shapes created
	// before it, so a PUT racing with the list being built is not evicted.
	c.PrevHeartbeat = c.HeartbeatAt
	c.HeartbeatAt = now
	c.LastHeartbeat = now
	l.renew(c, now)
	if inventory != nil {
		c.Inventory = append([]string{}, inventory...)
		c.InventoryAt = now
	}
	l.markConsumer(id)
	l.consumerChanged(c)
	return cloneConsumer(c), nil
}

// SetStreaming records that the consumer's change stream opened or closed.
// An open stream keeps the lease alive; on close the lease runs from now.
// It is for an embedder that tracks a single stream per consumer itself;
// OpenStream and CloseStream count several, per lease.
func (l *Ledger) SetStreaming(id string, open bool) {
	now := l.now().UTC()
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.consumers[id]
	if l.closed || c == nil || c.Gone {
		return
	}
	c.Streaming = open
	c.LastHeartbeat = now
	l.renew(c, now)
	l.markConsumer(id)
	l.consumerChanged(c)
}

// openStreams counts the change streams open under one lease of a consumer.
type openStreams struct {
	epoch uint64
	n     int
}

// OpenStream checks the lease like CheckLease and, in the same step, counts
// a change stream opened under it: while one is open the lease does not run
// out. It returns the lease's epoch, to give to CloseStream. Streams are
// counted per epoch, so a stream still open under an ended lease neither
// holds nor releases the lease of a consumer that registered the id again:
// the lease probe then judges a live lease by its own streams only (I3).
func (l *Ledger) OpenStream(id, lease string) (uint64, error) {
	now := l.now().UTC()
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.waitConsumer(id) { // its end or a shape's eviction is being committed: answer with the outcome
	}
	if l.closed {
		return 0, ErrClosed
	}
	c, err := l.checkLease(id, lease)
	if err != nil {
		return 0, err
	}
	if l.streams == nil {
		l.streams = map[string]openStreams{}
	}
	st := l.streams[id]
	if st.epoch != c.Epoch {
		st = openStreams{epoch: c.Epoch} // the streams of an ended lease no longer count
	}
	st.n++
	l.streams[id] = st
	if st.n == 1 {
		c.Streaming = true
		c.LastHeartbeat = now
		l.renew(c, now)
		l.markConsumer(id)
		l.consumerChanged(c)
	}
	return c.Epoch, nil
}

// CloseStream records that a change stream OpenStream counted under epoch
// closed. When it was the last one of the consumer's current lease, the
// lease runs from now. A stream of an earlier lease changes nothing.
func (l *Ledger) CloseStream(id string, epoch uint64) {
	now := l.now().UTC()
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.streams[id]
	if !ok || st.epoch != epoch {
		return
	}
	if st.n--; st.n > 0 {
		l.streams[id] = st
		return
	}
	delete(l.streams, id)
	c := l.consumers[id]
	if l.closed || c == nil || c.Gone || c.Epoch != epoch {
		return
	}
	c.Streaming = false
	c.LastHeartbeat = now
	l.renew(c, now)
	l.markConsumer(id)
	l.consumerChanged(c)
}

// Consumer returns a consumer (live or gone).
func (l *Ledger) Consumer(id string) (Consumer, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.consumers[id]
	if c == nil {
		return Consumer{}, false
	}
	return l.view(c), true
}

// Consumers returns every consumer, ordered by id.
func (l *Ledger) Consumers() []Consumer {
	l.mu.Lock()
	out := make([]Consumer, 0, len(l.consumers))
	for _, c := range l.consumers {
		out = append(out, l.view(c))
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Release ends a consumer at its own request (DELETE): the consumer is marked
// gone and its shapes evicted as released, in one bbolt transaction.
func (l *Ledger) Release(id, lease string) error {
	l.mu.Lock()
	_, err := l.checkLease(id, lease)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	return l.endConsumer(id, lease, nil, ReasonReleased, "released by the consumer", "consumer")
}

// ExpireConsumer ends a consumer whose liveness failed (lease expired,
// process gone): the consumer is marked gone and all its shapes evicted with
// reason, in one bbolt transaction, so no shape of a dead consumer pins the
// slot (I3) and none comes back (I4).
func (l *Ledger) ExpireConsumer(id string, reason Reason, evidence string) error {
	return l.endConsumer(id, "", nil, reason, evidence, "reconciler")
}

// ExpireConsumerIf is ExpireConsumer conditional on the observation the
// decision was made from: it ends the consumer only if it is still the lease
// seen (same epoch and token) and has neither heartbeated nor opened or
// closed its change stream since (same LastHeartbeat and Streaming). Without
// this a decision taken on an old read could end a consumer that had just
// registered again or renewed its lease. Otherwise it returns an error
// wrapping ErrChanged and changes nothing; the caller looks again.
func (l *Ledger) ExpireConsumerIf(seen Consumer, reason Reason, evidence string) error {
	same := func(c *Consumer) error {
		if c.Epoch != seen.Epoch || c.leaseHash != seen.leaseHash || !c.LastHeartbeat.Equal(seen.LastHeartbeat) || c.Streaming != seen.Streaming {
			return fmt.Errorf("%w: consumer %q (epoch %d, seen epoch %d)", ErrChanged, c.ID, c.Epoch, seen.Epoch)
		}
		return nil
	}
	return l.endConsumer(seen.ID, "", same, reason, evidence, "reconciler")
}

// endConsumer marks a consumer gone and evicts its shapes in one
// transaction. A non-empty lease must still be the current one; a non-nil
// check must accept the consumer, under the same lock as the change.
func (l *Ledger) endConsumer(id, lease string, check func(*Consumer) error, reason Reason, evidence, actor string) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	c := l.consumers[id]
	if c == nil {
		l.mu.Unlock()
		return fmt.Errorf("%w: consumer %q", ErrNotFound, id)
	}
	if lease != "" && !c.leaseHash.matches(lease) {
		l.mu.Unlock()
		return fmt.Errorf("%w: consumer %q (epoch %d)", ErrWrongLease, id, c.Epoch)
	}
	if c.Gone {
		l.mu.Unlock()
		return &GoneError{Consumer: id, Reason: c.GoneReason, At: c.GoneAt}
	}
	if check != nil {
		if err := check(c); err != nil {
			l.mu.Unlock()
			return err
		}
	}
	now := l.now().UTC()
	nc := cloneConsumer(c)
	nc.Gone, nc.GoneReason, nc.GoneAt, nc.Streaming = true, reason, now, false
	var owned []*shapeState
	var tss []Tombstone
	if o := l.t.owners[id]; o != nil {
		for s := o.head; s != nil; s = s.next {
			owned = append(owned, s)
			tss = append(tss, tombstoneOf(s, reason, evidence, actor, now))
		}
	}
	ch := l.beginChange(id, owned)
	l.mu.Unlock()
	if testHookCommit != nil {
		testHookCommit()
	}

	err := guard(func() error {
		return l.db.Update(func(tx *bolt.Tx) error {
			j := newJournal(tx, now)
			if err := goneTx(tx, j, &nc, evidence, actor); err != nil {
				return err
			}
			for _, ts := range tss {
				if err := evictTx(tx, j, ts); err != nil {
					return err
				}
			}
			return nil
		})
	})
	l.mu.Lock()
	if err == nil {
		idx := c.leaseIdx // the heap moved c while the commit ran: keep where it is now
		*c = nc
		c.leaseIdx = idx
		l.consumerChanged(c)
		for i, s := range owned {
			l.dropShape(s, tss[i])
		}
	}
	l.endChange(ch)
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("ending consumer %q: %w", id, err)
	}
	l.log.Info().Str("consumer", id).Str("reason", string(reason)).Str("evidence", evidence).
		Int("shapes_evicted", len(owned)).Msg("consumer gone")
	return nil
}

// goneTx writes a consumer marked gone and its journal event.
func goneTx(tx *bolt.Tx, j *journal, c *Consumer, evidence, actor string) error {
	if err := put(tx.Bucket(bucketConsumers), []byte(c.ID), encodeConsumer(c)); err != nil {
		return err
	}
	kind := EventConsumerGone
	switch c.GoneReason {
	case ReasonLeaseExpired, ReasonExpiredBeforeRestart:
		kind = EventLeaseExpired
	case ReasonReleased:
		kind = EventReleased
	}
	return j.add(Event{Kind: kind, Consumer: c.ID, Reason: c.GoneReason, Detail: detail(evidence, actor)})
}
