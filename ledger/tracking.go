package ledger

// Track records a transaction (commit LSN, end LSN) routed by the router to
// shapes and returns the shapes that must receive it: live shapes whose
// flushed LSN is below commit. Shapes that already flushed it are skipped
// (I2: after Postgres replays from an older confirmed_flush_lsn, an acked
// transaction is not delivered again). An empty result means the transaction
// is acked at once for the flush computation. The returned slice is shapes
// itself when nothing was skipped.
//
// It is called from the single stream goroutine, in commit order.
func (l *Ledger) Track(commit, end LSN, shapes []string) []string {
	now := l.now().UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return shapes // over-deliver rather than let a closed ledger read as "acked at once" (I1)
	}
	l.t.open = 0
	return l.t.track(commit, end, shapes, now)
}

// TrackOpen is Track for a piece of a transaction still being decoded
// (its commit record not read yet): the shapes it returns are pending on
// commit from now on, so the safe flush LSN stays at or below commit until
// they ack it (I1). The end LSN is not known yet; Track with the last piece
// gives it. Until then, a shape created meanwhile starts at commit itself
// rather than just below it: it missed the transaction's earlier pieces,
// so it gets none of the transaction (a consumer never sees a transaction
// in part) and its flushed position already covers it (I2).
func (l *Ledger) TrackOpen(commit LSN, shapes []string) []string {
	now := l.now().UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return shapes
	}
	l.t.open = commit
	return l.t.track(commit, 0, shapes, now)
}

// Idle tells the ledger the server WAL end while nothing is in flight: with
// nothing pending the safe LSN may advance to it (I3). Call it only when
// every transaction that ends before walEnd has been passed to Track.
func (l *Ledger) Idle(walEnd LSN) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if walEnd > l.t.position {
		l.t.position = walEnd
	}
}

// Ack records that a shape has flushed every transaction routed to it with a
// commit LSN <= lsn. It completes all pending entries up to lsn (an ack >= the
// last transaction sent completes the shape: never an exact match). The ack
// is applied in memory at once and becomes durable with the next group
// commit; call Sync to wait for that.
//
// An ack at or below the shape's flushed LSN is ignored (I6). An ack above
// both the flushed LSN and the last transaction sent is an *AckError: the
// consumer claims what it never received. An evicted shape gets a *GoneError
// with the reason (I4); an unknown one ErrNotFound. An ack that arrives
// while the shape's eviction is being committed waits for the outcome.
func (l *Ledger) Ack(shape string, lsn LSN) error {
	now := l.now().UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.waitShape(shape) { // its eviction is being committed: answer with the outcome
	}
	if l.closed {
		return ErrClosed
	}
	s := l.t.shapes.Get(shape)
	if s == nil {
		return l.goneOrNotFound(shape)
	}
	if lsn <= s.flushed {
		return nil
	}
	if lsn > s.lastSent {
		return &AckError{Shape: shape, LSN: lsn, LastSent: s.lastSent}
	}
	l.t.ack(s, lsn)
	s.lastAck = now
	l.markShape(s)
	return nil
}

// SafeLSN is the safe flush LSN (docs/api.md, "Concepts") computed from memory: the smallest
// pending commit LSN, or the last processed end LSN / idle WAL end when
// nothing is pending. It may be ahead of what is committed; report FlushLSN.
func (l *Ledger) SafeLSN() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t.safe()
}

// Position is the end LSN of the last processed transaction, or the idle WAL
// end if that is further.
func (l *Ledger) Position() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t.position
}

// Holders returns up to n pending shapes, smallest PendingLSN first; those
// whose PendingLSN equals SafeLSN are the ones pinning WAL. n <= 0 means all.
func (l *Ledger) Holders(n int) []Shape {
	l.mu.Lock()
	defer l.mu.Unlock()
	ss := l.t.smallest(n)
	out := make([]Shape, len(ss))
	for i, s := range ss {
		out[i] = l.shapeView(s)
	}
	return out
}

// PendingCount returns how many shapes are pending.
func (l *Ledger) PendingCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.t.heap)
}
