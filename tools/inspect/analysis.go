package main

import (
	"fmt"
	"sort"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

// Defaults of the daemon's reconcile flags (docs/operations.md, "Flags"), used to predict what
// the reconciler will do; override them with inspect's flags of the same
// name when the daemon runs with others.
const (
	DefaultReconcileInterval = time.Second
	DefaultStallGrace        = 60 * time.Second
	DefaultChallengeTimeout  = 10 * time.Second
)

// Policy is the reconciler's timing as the daemon is configured.
type Policy struct {
	ReconcileInterval time.Duration
	StallGrace        time.Duration
	ChallengeTimeout  time.Duration
	// MaxShapeLagBytes is the daemon's -max-shape-lag-bytes (0 = off).
	MaxShapeLagBytes int64
}

// Holder is a shape pinning (or, from a file, possibly pinning) WAL.
type Holder struct {
	Shape    string `json:"shape"`
	Consumer string `json:"consumer"`
	Table    string `json:"table"`
	// Certain is false for candidates derived from the file: pending
	// positions are not persisted, so a shape whose flushed LSN is below the
	// last reported flush may hold it, or may simply have received nothing.
	Certain bool   `json:"certain"`
	Source  string `json:"source"` // daemon or derived
	// PendingLSN is the smallest unacked commit LSN (daemon); from a file it
	// is empty and FlushedLSN is the last durable ack.
	PendingLSN   string     `json:"pending_lsn,omitempty"`
	FlushedLSN   string     `json:"flushed_lsn"`
	PendingSince *time.Time `json:"pending_since,omitempty"`
	// PinnedSeconds is how long it has pinned: now - PendingSince (daemon),
	// or now - last ack (or creation) as an upper bound from a file.
	PinnedSeconds float64 `json:"pinned_seconds"`
	PinnedFrom    string  `json:"pinned_from"` // pending_since, last_ack or created_at
	// PinnedBytes is nil when unknown (no -pg, or the daemon could not ask
	// Postgres). BytesSource says how it was computed.
	PinnedBytes *int64     `json:"pinned_bytes"`
	BytesSource string     `json:"bytes_source"`
	LastAck     *time.Time `json:"last_ack,omitempty"`
	Lease       LeaseState `json:"lease"`
	Next        Action     `json:"next"`
}

// LeaseState is the consumer's liveness as the ledger has it.
type LeaseState struct {
	State     string     `json:"state"` // streaming, live, expired, gone, missing
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	Text      string     `json:"text"`
}

// Action is what the reconciler will do about a holder, and when.
type Action struct {
	What   string     `json:"what"`
	Reason string     `json:"reason,omitempty"` // the eviction reason it will record
	At     *time.Time `json:"at,omitempty"`     // at the latest; nil when it depends on the consumer
}

func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// leaseState describes consumer id's lease at now.
func leaseState(src *Source, id string) LeaseState {
	c, ok := src.consumer(id)
	now := src.Now
	switch {
	case !ok:
		return LeaseState{State: "missing", Text: "consumer " + id + " is not in the ledger"}
	case c.Gone:
		return LeaseState{State: "gone", Reason: string(c.GoneReason),
			Text: fmt.Sprintf("gone (%s) since %s", c.GoneReason, ts(c.GoneAt))}
	case c.Streaming:
		return LeaseState{State: "streaming", Text: "held by an open change stream"}
	case c.ExpiresAt.After(now):
		return LeaseState{State: "live", ExpiresAt: tp(c.ExpiresAt),
			Text: fmt.Sprintf("live, expires %s (in %s)", ts(c.ExpiresAt), dur(c.ExpiresAt.Sub(now)))}
	default:
		return LeaseState{State: "expired", ExpiresAt: tp(c.ExpiresAt),
			Text: fmt.Sprintf("expired at %s (%s ago)", ts(c.ExpiresAt), dur(now.Sub(c.ExpiresAt)))}
	}
}

// nextAction predicts the reconciler (docs/operations.md, "Liveness") for a pending shape: the
// lease probe evicts TTL after the last heartbeat, at most one reconcile
// pass late; the progress probe challenges a shape pending stall-grace
// without ack progress and evicts it challenge-timeout later. A daemon that
// is down does nothing until it starts, when the restart rules apply (I5).
func nextAction(src *Source, p Policy, sh ledger.Shape, pendingSince time.Time) Action {
	c, ok := src.consumer(sh.Consumer)
	now := src.Now
	pass := now.Add(p.ReconcileInterval)
	if !src.daemonRunning() {
		switch {
		case !ok || c.Gone:
			return Action{What: "evicted when ledgerd starts (its consumer is gone)", Reason: string(ledger.ReasonExpiredBeforeRestart)}
		case !c.Streaming && !c.ExpiresAt.IsZero() && !src.State.Meta.Tick.IsZero() && c.ExpiresAt.Before(src.State.Meta.Tick):
			return Action{What: fmt.Sprintf("evicted when ledgerd starts: the lease expired at %s, before the last liveness tick %s",
				ts(c.ExpiresAt), ts(src.State.Meta.Tick)), Reason: string(ledger.ReasonExpiredBeforeRestart)}
		default:
			return Action{What: fmt.Sprintf("nothing while ledgerd is down; at start its lease is extended to start + %s, then it is evicted as lease_expired unless the consumer heartbeats or streams", dur(c.TTL)),
				Reason: string(ledger.ReasonLeaseExpired)}
		}
	}
	// The progress probe, when the pending start is known.
	var stallAt time.Time
	if !pendingSince.IsZero() {
		base := pendingSince
		if sh.LastAckAt.After(base) {
			base = sh.LastAckAt
		}
		stallAt = base.Add(p.StallGrace)
	}
	// A challenge already in the journal, made after the last progress,
	// fixes the eviction time.
	var challenged time.Time
	if !stallAt.IsZero() {
		base := stallAt.Add(-p.StallGrace)
		for _, e := range src.State.Events {
			if e.Kind == ledger.EventChallenged && e.Shape == sh.ID && !e.Time.Before(base) {
				challenged = e.Time
			}
		}
	}
	stall := func() Action {
		if !challenged.IsZero() {
			evict := challenged.Add(p.ChallengeTimeout)
			if evict.Before(now) {
				evict = now
			}
			evict = evict.Add(p.ReconcileInterval)
			return Action{What: fmt.Sprintf("challenged at %s; evicted as stalled by %s unless it acks or defers", ts(challenged), ts(evict)),
				Reason: string(ledger.ReasonStalled), At: tp(evict)}
		}
		challenge := stallAt
		if challenge.Before(now) {
			challenge = now
		}
		evict := challenge.Add(p.ChallengeTimeout)
		return Action{What: fmt.Sprintf("challenged by %s (pending %s without ack progress), evicted as stalled by %s unless it acks or defers",
			ts(challenge), dur(p.StallGrace), ts(evict)), Reason: string(ledger.ReasonStalled), At: tp(evict)}
	}
	switch {
	case !ok:
		return Action{What: "evicted at the next reconcile pass (its consumer is not in the ledger)", Reason: string(ledger.ReasonLeaseExpired), At: tp(pass)}
	case c.Gone:
		return Action{What: fmt.Sprintf("evicted at the next reconcile pass (consumer gone: %s)", c.GoneReason), Reason: string(c.GoneReason), At: tp(pass)}
	case c.Streaming:
		if stallAt.IsZero() {
			return Action{What: fmt.Sprintf("no lease eviction while its stream is open; challenged after %s pending without ack progress", dur(p.StallGrace)),
				Reason: string(ledger.ReasonStalled)}
		}
		return stall()
	case !c.ExpiresAt.After(now):
		return Action{What: fmt.Sprintf("evicted as lease_expired at the next reconcile pass (lease expired %s ago)", dur(now.Sub(c.ExpiresAt))),
			Reason: string(ledger.ReasonLeaseExpired), At: tp(pass)}
	default:
		leaseAt := c.ExpiresAt.Add(p.ReconcileInterval)
		if !stallAt.IsZero() && stallAt.Add(p.ChallengeTimeout).Before(leaseAt) {
			return stall()
		}
		return Action{What: fmt.Sprintf("evicted as lease_expired by %s unless the consumer heartbeats (lease expires %s)", ts(leaseAt), ts(c.ExpiresAt)),
			Reason: string(ledger.ReasonLeaseExpired), At: tp(leaseAt)}
	}
}

// walEnd returns the best known WAL end and where it comes from: Postgres
// (-pg) first, then the daemon's status.
func walEnd(src *Source) (ledger.LSN, string) {
	if src.PG != nil && src.PG.WALEnd != 0 {
		return src.PG.WALEnd, fromPG
	}
	if src.Daemon != nil && src.Daemon.Status != nil && src.Daemon.Status.WALEnd != "" {
		if l, err := ledger.ParseLSN(src.Daemon.Status.WALEnd); err == nil && l != 0 {
			return l, fromDaemon
		}
	}
	return 0, ""
}

// holders lists the shapes pinning WAL, worst first. With live daemon
// views they are the daemon's pending shapes; otherwise candidates derived
// from the file.
func holders(src *Source, p Policy) []Holder {
	end, endFrom := walEnd(src)
	var out []Holder
	if src.Daemon != nil && src.Daemon.Status != nil {
		for _, w := range src.Daemon.Holding {
			out = append(out, liveHolder(src, p, w, end, endFrom))
		}
		sort.SliceStable(out, func(i, j int) bool {
			a, b := mustLSN(out[i].PendingLSN), mustLSN(out[j].PendingLSN)
			if a != b {
				return a < b
			}
			return out[i].PinnedSeconds > out[j].PinnedSeconds
		})
		return out
	}
	return derivedHolders(src, p, end)
}

func mustLSN(s string) ledger.LSN {
	l, _ := ledger.ParseLSN(s)
	return l
}

func liveHolder(src *Source, p Policy, w wire.Shape, end ledger.LSN, endFrom string) Holder {
	h := Holder{Shape: w.ID, Consumer: w.Consumer, Table: w.Table, Certain: true, Source: fromDaemon,
		PendingLSN: w.PendingLSN, FlushedLSN: w.FlushedLSN, PendingSince: w.PendingSince, LastAck: w.LastAckAt,
		Lease: leaseState(src, w.Consumer)}
	if w.PendingSince != nil {
		h.PinnedSeconds = src.Now.Sub(*w.PendingSince).Seconds()
		h.PinnedFrom = "pending_since"
	}
	pending := mustLSN(w.PendingLSN)
	switch {
	case endFrom == fromPG && end >= pending:
		b := int64(end - pending)
		h.PinnedBytes, h.BytesSource = &b, "postgres: pg_current_wal_lsn() - pending_lsn"
	case w.PinnedBytes > 0:
		b := w.PinnedBytes
		h.PinnedBytes, h.BytesSource = &b, "daemon: wal_end - pending_lsn"
	default:
		h.BytesSource = "unknown: give -pg to measure"
	}
	sh := ledger.Shape{ShapeSpec: ledger.ShapeSpec{ID: w.ID, Consumer: w.Consumer}}
	if w.LastAckAt != nil {
		sh.LastAckAt = *w.LastAckAt
	}
	var since time.Time
	if w.PendingSince != nil {
		since = *w.PendingSince
	}
	h.Next = nextAction(src, p, sh, since)
	if p.MaxShapeLagBytes > 0 && h.PinnedBytes != nil && *h.PinnedBytes > p.MaxShapeLagBytes {
		h.Next = Action{What: fmt.Sprintf("evicted as wal_budget at the next reconcile pass: it pins %d bytes, over the %d-byte budget",
			*h.PinnedBytes, p.MaxShapeLagBytes), Reason: string(ledger.ReasonWALBudget), At: tp(src.Now.Add(p.ReconcileInterval))}
	}
	return h
}

// derivedHolders infers possible holders from the file alone. The file
// records the last flush position offered to Postgres (Meta.LastFlush) and
// the processed position; when the flush is behind the position something
// was pending at the last report, and only shapes whose durable flushed LSN
// is below that flush can be the ones holding it. They are candidates,
// ordered by the likeliest culprit first: consumer gone or lease expired,
// then the oldest last ack.
func derivedHolders(src *Source, p Policy, end ledger.LSN) []Holder {
	m := src.State.Meta
	mark := m.LastFlush
	if m.Position == 0 || mark >= m.Position {
		return nil
	}
	var out []Holder
	for _, sh := range src.State.Shapes {
		if sh.FlushedLSN >= mark {
			continue
		}
		h := Holder{Shape: sh.ID, Consumer: sh.Consumer, Table: sh.Table, Source: fromDerived,
			FlushedLSN: sh.FlushedLSN.String(), LastAck: tp(sh.LastAckAt), Lease: leaseState(src, sh.Consumer)}
		from, fromName := sh.LastAckAt, "last_ack"
		if from.IsZero() {
			from, fromName = sh.CreatedAt, "created_at"
		}
		if !from.IsZero() {
			h.PinnedSeconds = src.Now.Sub(from).Seconds()
			h.PinnedFrom = fromName
		}
		if end != 0 && end >= mark {
			b := int64(end - mark)
			h.PinnedBytes, h.BytesSource = &b, "postgres: pg_current_wal_lsn() - last reported flush (the pending LSN is not in the file)"
		} else {
			h.BytesSource = "unknown: pending positions are not in the file; give -pg (bytes behind the WAL end) or -url (the daemon's live holders)"
		}
		h.Next = nextAction(src, p, sh, time.Time{})
		out = append(out, h)
	}
	rank := func(h Holder) int {
		switch h.Lease.State {
		case "missing", "gone":
			return 0
		case "expired":
			return 1
		case "live":
			return 2
		}
		return 3
	}
	sort.SliceStable(out, func(i, j int) bool {
		if ri, rj := rank(out[i]), rank(out[j]); ri != rj {
			return ri < rj
		}
		if out[i].PinnedSeconds != out[j].PinnedSeconds {
			return out[i].PinnedSeconds > out[j].PinnedSeconds
		}
		return out[i].Shape < out[j].Shape
	})
	return out
}

// ts formats a time for text output.
func ts(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// dur formats a duration to the second (or millisecond below a second).
func dur(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// bytesText formats a byte count for people.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
