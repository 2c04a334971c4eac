package main

import (
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestNextAction checks the reconciler predictions against the reconciler's rules (docs/operations.md, "Liveness") with
// the default policy (reconcile 1s, stall-grace 60s, challenge-timeout 10s).
func TestNextAction(t *testing.T) {
	p := Policy{ReconcileInterval: time.Second, StallGrace: 60 * time.Second, ChallengeTimeout: 10 * time.Second}
	now := t0.Add(time.Minute)
	at := func(d time.Duration) *time.Time { x := t0.Add(d); return &x }
	cases := []struct {
		name     string
		running  bool
		c        *ledger.Consumer
		since    time.Duration // pending since t0+since; <0 = unknown
		lastAck  time.Duration
		reason   ledger.Reason
		when     *time.Time
		contains string
	}{
		{"live lease, expiry first", true, &ledger.Consumer{ID: "c", TTL: 10 * time.Second, ExpiresAt: t0.Add(65 * time.Second)},
			50 * time.Second, 0, ledger.ReasonLeaseExpired, at(66 * time.Second), "unless the consumer heartbeats"},
		{"live lease, stall first", true, &ledger.Consumer{ID: "c", TTL: time.Hour, ExpiresAt: t0.Add(time.Hour)},
			10 * time.Second, 0, ledger.ReasonStalled, at(80 * time.Second), "challenged by 2026-03-01T12:01:10Z"},
		{"last ack restarts the stall clock", true, &ledger.Consumer{ID: "c", TTL: time.Hour, ExpiresAt: t0.Add(time.Hour)},
			10 * time.Second, 30 * time.Second, ledger.ReasonStalled, at(100 * time.Second), "evicted as stalled by 2026-03-01T12:01:40Z"},
		{"overdue stall is challenged now", true, &ledger.Consumer{ID: "c", Streaming: true},
			-0, 0, ledger.ReasonStalled, at(70 * time.Second), "challenged by 2026-03-01T12:01:00Z"},
		{"challenged already", true, &ledger.Consumer{ID: "c", Streaming: true},
			-0, 0, ledger.ReasonStalled, at(66 * time.Second), "challenged at 2026-03-01T12:00:55Z"},
		{"streaming, pending unknown", true, &ledger.Consumer{ID: "c", Streaming: true},
			-1, 0, ledger.ReasonStalled, nil, "no lease eviction while its stream is open"},
		{"expired lease", true, &ledger.Consumer{ID: "c", ExpiresAt: t0.Add(30 * time.Second)},
			-1, 0, ledger.ReasonLeaseExpired, at(61 * time.Second), "next reconcile pass"},
		{"gone consumer", true, &ledger.Consumer{ID: "c", Gone: true, GoneReason: ledger.ReasonProcessGone},
			-1, 0, ledger.ReasonProcessGone, at(61 * time.Second), "consumer gone"},
		{"missing consumer", true, nil, -1, 0, ledger.ReasonLeaseExpired, at(61 * time.Second), "not in the ledger"},
		{"down, expired before the tick", false, &ledger.Consumer{ID: "c", ExpiresAt: t0.Add(5 * time.Second)},
			-1, 0, ledger.ReasonExpiredBeforeRestart, nil, "when ledgerd starts"},
		{"down, expires after the tick", false, &ledger.Consumer{ID: "c", TTL: 10 * time.Second, ExpiresAt: t0.Add(20 * time.Second)},
			-1, 0, ledger.ReasonLeaseExpired, nil, "extended to start + 10s"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := &ledger.State{Meta: ledger.Meta{Tick: t0.Add(10 * time.Second)}}
			if strings.HasPrefix(c.name, "challenged") {
				st.Events = []ledger.Event{{Seq: 1, Time: t0.Add(55 * time.Second), Kind: ledger.EventChallenged, Consumer: "c", Shape: "s"}}
			}
			if c.c != nil {
				st.Consumers = []ledger.Consumer{*c.c}
			}
			src := &Source{Kind: fromFile, State: st, Now: now}
			if c.running {
				src.Kind = fromSnapshot
			}
			sh := ledger.Shape{ShapeSpec: ledger.ShapeSpec{ID: "s", Consumer: "c"}}
			if c.lastAck > 0 {
				sh.LastAckAt = t0.Add(c.lastAck)
			}
			var since time.Time
			if c.since >= 0 {
				since = t0.Add(c.since)
			}
			a := nextAction(src, p, sh, since)
			if a.Reason != string(c.reason) {
				t.Errorf("reason %q, want %q (%s)", a.Reason, c.reason, a.What)
			}
			switch {
			case c.when == nil && a.At != nil:
				t.Errorf("at %s, want no fixed time (%s)", a.At, a.What)
			case c.when != nil && (a.At == nil || !a.At.Equal(*c.when)):
				t.Errorf("at %v, want %s (%s)", a.At, c.when, a.What)
			}
			if !strings.Contains(a.What, c.contains) {
				t.Errorf("%q does not contain %q", a.What, c.contains)
			}
		})
	}
}
