package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// pass is one reconcile pass: what it read and what it did so far.
type pass struct {
	r       *Reconciler
	ctx     context.Context
	now     time.Time
	limit   int
	room    int
	blocked bool // the breaker tripped: no more evictions this pass
	skipped int
	shapes  int // live shapes when the pass began

	// judged are the consumer ids this pass looks at (sorted); lists
	// those whose shape list is judged too.
	judged  []string
	lists   map[string]bool
	byID    map[string]ledger.Consumer // judged consumers known to the ledger
	ended   map[string]bool            // consumers ended this pass
	evicted map[string]bool            // shapes evicted this pass
	again   map[string]struct{}        // consumers to judge again next pass
	count   int
	errs    []error

	cancelled bool // the context ended: the pass stopped (stopped)
}

// sweepPerPass bounds the consumers a pass judges besides those that
// changed, whose lease ran out or that a pass could not finish with: the
// background sweep that runs the process probe, and finds shapes left
// without a consumer, over every consumer in turn.
const sweepPerPass = 256

func (r *Reconciler) newPass(ctx context.Context, now time.Time) *pass {
	p := &pass{r: r, ctx: ctx, now: now, byID: map[string]ledger.Consumer{}, lists: map[string]bool{},
		ended: map[string]bool{}, evicted: map[string]bool{}, again: map[string]struct{}{}}
	l := r.cfg.Ledger
	if r.watch == nil {
		r.watch = l.WatchConsumers()
	}
	// What changed is drained before anything is read: a change made after
	// the reads is in the next drain, so nothing is judged on a stale read
	// without being judged again.
	changes := r.watch.Drain()
	ids := map[string]struct{}{}
	if changes.All {
		for _, id := range l.Owners() {
			ids[id] = struct{}{}
			p.lists[id] = true
		}
	}
	for _, id := range changes.Consumers {
		ids[id] = struct{}{}
		p.lists[id] = true
	}
	for id := range r.again {
		ids[id] = struct{}{}
		p.lists[id] = true
	}
	for _, c := range l.ExpiredConsumers() {
		ids[c.ID] = struct{}{}
	}
	for _, id := range r.sweepSlice(l) {
		ids[id] = struct{}{}
	}
	p.judged = sortedKeys(ids)
	for _, id := range p.judged {
		if c, ok := l.Consumer(id); ok {
			p.byID[id] = c
		}
	}
	p.shapes = l.LiveShapes()
	p.limit = limitFor(r.cfg.EvictMaxFraction, p.shapes)
	p.room = r.breaker.room(now, p.limit)
	return p
}

// sweepSlice returns the next consumers of the background sweep. A new
// round starts from the ledger's current owners once the last one is done,
// and forgets the process probe's memory of consumers no longer there.
func (r *Reconciler) sweepSlice(l Ledger) []string {
	if r.sweepAt >= len(r.sweep) {
		r.sweep, r.sweepAt = l.Owners(), 0
		known := make(map[string]struct{}, len(r.sweep))
		for _, id := range r.sweep {
			known[id] = struct{}{}
		}
		for id := range r.procs {
			if _, ok := known[id]; !ok {
				delete(r.procs, id)
			}
		}
	}
	n := min(sweepPerPass, len(r.sweep)-r.sweepAt)
	out := r.sweep[r.sweepAt : r.sweepAt+n]
	r.sweepAt += n
	return out
}

// retry has the next pass judge the consumer again: something this pass
// decided about it was held back or did not go through.
func (p *pass) retry(consumer string) { p.again[consumer] = struct{}{} }

// allow asks the breaker for n evictions. When they do not fit, the rest of
// the pass evicts nothing. A consumer owning more shapes than the whole
// limit is let through when the window is otherwise empty: its shapes go in
// one ledger transaction with it, and the breaker is there against many
// consumers failing at once, not against one large one.
func (p *pass) allow(n int) bool {
	if n == 0 {
		return true // ending a consumer that owns no shape evicts nothing
	}
	if p.blocked {
		p.skipped += n
		return false
	}
	if n <= p.room || (n > p.limit && p.room == p.limit) {
		return true
	}
	p.blocked = true
	p.skipped += n
	return false
}

func (p *pass) spent(n int) {
	p.room = max(p.room-n, 0)
	p.r.breaker.use(p.now, n)
}

// finish updates the breaker's state, metrics and log.
func (p *pass) finish() {
	r := p.r
	if p.cancelled { // what it did not get to is judged next pass
		for _, id := range p.judged {
			p.again[id] = struct{}{}
		}
	}
	r.again = p.again
	if p.blocked {
		r.m.skipped.Add(float64(p.skipped))
		if !r.breaker.tripped {
			r.breaker.tripped = true
			r.m.breakerTrips.Inc()
			r.m.breakerOpen.Set(1)
			r.log.Warn().Int("limit_per_minute", p.limit).Int("evicted_this_pass", p.count).Int("held_back", p.skipped).
				Int("shapes", p.shapes).Float64("evict_max_fraction", r.cfg.EvictMaxFraction).
				Msg("eviction circuit breaker tripped: holding back automatic evictions until the rolling minute allows them")
		}
		return
	}
	if r.breaker.tripped {
		r.breaker.tripped = false
		r.m.breakerOpen.Set(0)
		r.log.Info().Msg("eviction circuit breaker closed: no eviction held back this pass")
	}
}

// stopped reports whether the pass was cancelled (ledgerd is shutting
// down): it then stops between two decisions. What it did not get to is
// decided by the next pass, as after a failure.
func (p *pass) stopped() bool {
	if p.ctx.Err() == nil {
		return false
	}
	if !p.cancelled {
		p.cancelled = true
		p.errs = append(p.errs, p.ctx.Err())
	}
	return true
}

func (p *pass) fail(err error) {
	if err != nil && !errors.Is(err, ledger.ErrClosed) {
		p.errs = append(p.errs, err)
	}
}

// consumers applies the lease and process probes to the judged consumers.
func (p *pass) consumers() {
	r := p.r
	for _, id := range p.judged {
		if p.stopped() {
			return
		}
		c, ok := p.byID[id]
		if !ok || c.Gone {
			delete(r.procs, id)
			continue
		}
		var reason ledger.Reason
		var evidence string
		switch {
		case !c.Streaming && !p.now.Before(c.ExpiresAt):
			reason = ledger.ReasonLeaseExpired
			evidence = fmt.Sprintf("last heartbeat %s, ttl %s, no open stream, now %s", stamp(c.LastHeartbeat), c.TTL, stamp(p.now))
		case c.PID > 0 && c.Host != "" && c.Host == r.cfg.Host:
			var ok bool
			if reason, evidence, ok = p.process(c); !ok {
				continue
			}
		default:
			continue
		}
		p.expire(c, reason, evidence)
	}
}

// procSeen is what the process probe saw of a consumer's pid.
type procSeen struct {
	epoch     uint64
	start     string
	at        time.Time
	untrusted bool // the registered start time is not what this host shows
}

// process is the process probe of a consumer registered on this host. A pid
// is judged only after the probe has seen it running, for this lease, with
// the start time the consumer registered (if it registered one): a consumer
// on the same host name but in another pid namespace (a container sharing
// the host name) shows no such process, or another one, from here, and must
// not be ended for it. After that, the pid gone or started at another time
// (reused) is process_gone.
func (p *pass) process(c ledger.Consumer) (ledger.Reason, string, bool) {
	r := p.r
	start, err := r.cfg.Process.StartTime(c.PID)
	seen, ok := r.procs[c.ID]
	if ok && seen.epoch != c.Epoch {
		ok = false
	}
	switch {
	case errors.Is(err, ErrNoProcess):
		if !ok || seen.untrusted {
			return "", "", false
		}
		return ledger.ReasonProcessGone, fmt.Sprintf("%v; seen running with start time %s since %s; host %s, now %s",
			err, seen.start, stamp(seen.at), c.Host, stamp(p.now)), true
	case err != nil:
		r.log.Debug().Err(err).Str("consumer", c.ID).Int("pid", c.PID).Msg("process probe could not tell")
		return "", "", false
	case !ok:
		seen = procSeen{epoch: c.Epoch, start: start, at: p.now, untrusted: c.ProcStart != "" && c.ProcStart != start}
		r.procs[c.ID] = seen
		if seen.untrusted {
			r.log.Warn().Str("consumer", c.ID).Int("pid", c.PID).Str("registered_start", c.ProcStart).Str("start_here", start).
				Msg("the consumer's registered process start time is not what this host shows (another pid namespace?): the process probe does not judge it")
		}
		return "", "", false
	case seen.untrusted || start == seen.start:
		return "", "", false
	}
	return ledger.ReasonProcessGone, fmt.Sprintf("pid %d now has start time %s, seen with start time %s since %s (pid reused); host %s, now %s",
		c.PID, start, seen.start, stamp(seen.at), c.Host, stamp(p.now)), true
}

// expire ends a consumer with its shapes, if the breaker allows it and the
// consumer is still as observed.
func (p *pass) expire(c ledger.Consumer, reason ledger.Reason, evidence string) {
	r := p.r
	if p.stopped() {
		return
	}
	owned := r.cfg.Ledger.ShapesOf(c.ID)
	n := len(owned)
	if !p.allow(n) {
		p.retry(c.ID)
		return
	}
	err := r.cfg.Ledger.ExpireConsumerIf(c, reason, evidence)
	var gone *ledger.GoneError
	switch {
	case errors.Is(err, ledger.ErrChanged), errors.As(err, &gone), errors.Is(err, ledger.ErrNotFound):
		r.log.Debug().Err(err).Str("consumer", c.ID).Msg("consumer changed since observed; decided again next pass")
		p.retry(c.ID)
		return
	case err != nil:
		p.fail(fmt.Errorf("ending consumer %s (%s): %w", c.ID, reason, err))
		p.retry(c.ID)
		return
	}
	p.spent(n)
	p.ended[c.ID] = true
	if r.testEnded != nil {
		r.testEnded()
	}
	for _, sh := range owned {
		p.evicted[sh.ID] = true
		p.count++
		r.m.evictions.WithLabelValues(string(reason)).Inc()
		r.forget(sh.ID)
	}
	r.log.Info().Str("consumer", c.ID).Str("reason", string(reason)).Str("evidence", evidence).
		Int("shapes_evicted", n).Msg("consumer ended")
}

// testHookEvict, when set by a test, runs after a shape eviction was decided
// and before the ledger is asked for it.
var testHookEvict func(shape string)

// evict evicts one shape, if the breaker allows it and still holds for the
// shape and its consumer as they are when the eviction commits: the ledger
// judges it again under the lock that orders acks and heartbeats, so an ack,
// defer or heartbeat answered in between is never accepted and then evicted
// anyway. When it no longer holds, the next pass decides again.
func (p *pass) evict(sh ledger.Shape, reason ledger.Reason, evidence string, still func(cur ledger.Shape, owner ledger.Consumer) bool) {
	r := p.r
	if p.evicted[sh.ID] || p.stopped() {
		return
	}
	if !p.allow(1) {
		p.retry(sh.Consumer)
		return
	}
	if testHookEvict != nil {
		testHookEvict(sh.ID)
	}
	_, err := r.cfg.Ledger.EvictIf(sh, reason, evidence, Actor, still)
	var gone *ledger.GoneError
	switch {
	case errors.Is(err, ledger.ErrChanged):
		r.log.Debug().Err(err).Str("shape", sh.ID).Str("reason", string(reason)).Msg("shape changed since observed; decided again next pass")
		p.retry(sh.Consumer)
		return
	case errors.As(err, &gone), errors.Is(err, ledger.ErrNotFound):
		return
	case err != nil:
		p.fail(fmt.Errorf("evicting shape %s (%s): %w", sh.ID, reason, err))
		p.retry(sh.Consumer)
		return
	}
	p.spent(1)
	p.evicted[sh.ID] = true
	p.count++
	r.m.evictions.WithLabelValues(string(reason)).Inc()
	r.forget(sh.ID)
}

// orphans evicts shapes whose consumer is gone or unknown (a consumer ended
// by the restart rules or by a pass that failed half-way). Only the judged
// consumers' shapes are looked at: the sweep comes to every owner in turn.
func (p *pass) orphans() {
	l := p.r.cfg.Ledger
	for _, id := range p.judged {
		if p.stopped() {
			return
		}
		c, ok := p.byID[id]
		if ok && !c.Gone || p.ended[id] || l.ShapeCount(id) == 0 {
			continue
		}
		for _, sh := range l.ShapesOf(id) {
			if p.evicted[sh.ID] {
				continue
			}
			if !ok {
				p.evict(sh, ledger.ReasonLeaseExpired, fmt.Sprintf("consumer %s is unknown to the ledger, now %s", sh.Consumer, stamp(p.now)),
					func(_ ledger.Shape, owner ledger.Consumer) bool { return owner.ID == "" })
				continue
			}
			p.evict(sh, c.GoneReason, fmt.Sprintf("consumer %s gone since %s (%s), now %s", c.ID, stamp(c.GoneAt), c.GoneReason, stamp(p.now)),
				func(_ ledger.Shape, owner ledger.Consumer) bool { return owner.Gone && owner.Epoch == c.Epoch })
		}
	}
}

// inventory judges the shapes of consumers whose last heartbeat carried a
// shape list. Only shapes created before the previous heartbeat are judged:
// one created since may have been missing from a list built while its PUT
// was in flight. A list is judged when it comes (the consumer
// changed), and again only when a pass could not finish judging it: shapes
// created later are judged by the next list.
func (p *pass) inventory() {
	for _, id := range p.judged {
		if p.stopped() {
			return
		}
		c, ok := p.byID[id]
		if !ok || c.Gone || p.ended[id] || !p.lists[id] || !judgesInventory(c) {
			continue
		}
		for _, sh := range p.r.cfg.Ledger.ShapesNotIn(id, c.Inventory, c.PrevHeartbeat) {
			if p.evicted[sh.ID] || !sh.CreatedAt.Before(c.PrevHeartbeat) {
				continue
			}
			ev := fmt.Sprintf("heartbeat at %s listed %d shapes without it; shape created %s, before the previous heartbeat at %s",
				stamp(c.InventoryAt), len(c.Inventory), stamp(sh.CreatedAt), stamp(c.PrevHeartbeat))
			// Still the list judged: a heartbeat since then carries a newer one.
			p.evict(sh, ledger.ReasonNotInInventory, ev, func(cur ledger.Shape, owner ledger.Consumer) bool {
				return !owner.Gone && owner.Epoch == c.Epoch && owner.InventoryAt.Equal(c.InventoryAt) && judgesInventory(owner) &&
					!slices.Contains(owner.Inventory, cur.ID)
			})
		}
	}
}

// judgesInventory reports whether the consumer's last heartbeat carried a
// shape list that may judge its shapes: sent by the last heartbeat, with a
// previous heartbeat to tell which shapes are old enough to be judged.
func judgesInventory(c ledger.Consumer) bool {
	return c.Inventory != nil && !c.PrevHeartbeat.IsZero() && c.InventoryAt.Equal(c.LastHeartbeat)
}

// walBudget evicts pending shapes pinning more than the budget.
func (p *pass) walBudget(walEnd ledger.LSN) {
	if p.stopped() {
		return
	}
	budget := p.r.cfg.MaxShapeLagBytes
	if int64(walEnd) <= budget {
		return
	}
	for _, sh := range p.r.cfg.Ledger.PendingBelow(walEnd - ledger.LSN(budget)) { // smallest pending LSN first
		if sh.PendingLSN == 0 || walEnd <= sh.PendingLSN || int64(walEnd-sh.PendingLSN) <= budget {
			break
		}
		if p.evicted[sh.ID] {
			continue
		}
		pinned := int64(walEnd - sh.PendingLSN)
		ev := fmt.Sprintf("pending %s since %s pins %d bytes (pg_current_wal_lsn %s), budget %d bytes, now %s",
			sh.PendingLSN, stamp(sh.PendingSince), pinned, walEnd, budget, stamp(p.now))
		pending := sh.PendingLSN
		p.evict(sh, ledger.ReasonWALBudget, ev, func(cur ledger.Shape, _ ledger.Consumer) bool { return cur.PendingLSN == pending })
	}
}

// progress challenges shapes pending past the stall grace without ack
// progress and evicts, as stalled, those that let the challenge time out.
func (p *pass) progress() {
	if p.stopped() {
		return
	}
	r := p.r
	l := r.cfg.Ledger
	// Only shapes pending since before the grace can be challenged; those
	// already challenged or deferred are looked at wherever they stand.
	holders := l.PendingSince(p.now.Add(-r.cfg.StallGrace))
	seen := make(map[string]bool, len(holders))
	for _, sh := range holders {
		seen[sh.ID] = true
	}
	r.mu.Lock()
	var more []string
	for id := range r.challenged {
		if !seen[id] {
			more = append(more, id)
		}
	}
	for id := range r.deferred {
		if !seen[id] {
			more = append(more, id)
		}
	}
	r.mu.Unlock()
	slices.Sort(more)
	more = slices.Compact(more)
	for _, id := range more {
		if sh, ok := l.Shape(id); ok && sh.PendingLSN != 0 {
			holders = append(holders, sh)
		}
	}
	pendingNow := make(map[string]bool, len(holders))
	type todo struct {
		sh ledger.Shape
		ch challenge
	}
	var challenges []ledger.Shape
	var expired []todo
	r.mu.Lock()
	for _, sh := range holders {
		if p.evicted[sh.ID] || sh.PendingLSN == 0 {
			continue
		}
		pendingNow[sh.ID] = true
		deferAt := r.deferred[sh.ID]
		since := latest(sh.PendingSince, sh.LastAckAt, deferAt)
		if ch, ok := r.challenged[sh.ID]; ok && ch.gen == sh.Generation {
			switch {
			case sh.FlushedLSN > ch.flushed || !deferAt.Before(ch.at):
				delete(r.challenged, sh.ID) // answered: the grace runs again from the progress
			case !p.now.Before(ch.at.Add(r.cfg.ChallengeTimeout)):
				expired = append(expired, todo{sh, ch})
			}
			continue
		}
		delete(r.challenged, sh.ID)
		if r.cfg.Challenger != nil && !p.now.Before(since.Add(r.cfg.StallGrace)) {
			r.challenged[sh.ID] = challenge{gen: sh.Generation, at: p.now, flushed: sh.FlushedLSN, pending: sh.PendingLSN}
			challenges = append(challenges, sh)
		}
	}
	for id := range r.challenged {
		if !pendingNow[id] {
			delete(r.challenged, id)
		}
	}
	for id := range r.deferred {
		if !pendingNow[id] {
			delete(r.deferred, id)
		}
	}
	r.mu.Unlock()

	for _, sh := range challenges {
		r.cfg.Challenger.Challenge(sh.Consumer, sh.ID)
		r.m.challenges.Inc()
		since := latest(sh.PendingSince, sh.LastAckAt)
		r.record(ledger.Event{Time: p.now, Kind: ledger.EventChallenged, Consumer: sh.Consumer, Shape: sh.ID, LSN: sh.PendingLSN,
			Detail: fmt.Sprintf("pending %s without ack progress since %s, stall grace %s; answer within %s", sh.PendingLSN, stamp(since), r.cfg.StallGrace, r.cfg.ChallengeTimeout)})
		r.log.Info().Str("shape", sh.ID).Str("consumer", sh.Consumer).Stringer("pending_lsn", sh.PendingLSN).Msg("shape challenged")
	}
	for _, x := range expired {
		sh, ch := x.sh, x.ch
		ev := fmt.Sprintf("pending %s since %s, last ack %s, challenged %s, no ack or defer within %s, now %s",
			sh.PendingLSN, stamp(sh.PendingSince), stamp(sh.LastAckAt), stamp(ch.at), r.cfg.ChallengeTimeout, stamp(p.now))
		// Still pending without ack progress and without a defer since the
		// challenge. A defer recorded after this ran finds the shape gone
		// (Defer looks again once the eviction is over).
		p.evict(sh, ledger.ReasonStalled, ev, func(cur ledger.Shape, _ ledger.Consumer) bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return cur.PendingLSN != 0 && cur.FlushedLSN <= ch.flushed && r.deferred[cur.ID].Before(ch.at)
		})
	}
}

// forget drops the progress memory of an evicted shape.
func (r *Reconciler) forget(id string) {
	r.mu.Lock()
	delete(r.challenged, id)
	delete(r.deferred, id)
	r.mu.Unlock()
}

func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
