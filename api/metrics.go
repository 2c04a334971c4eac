package api

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ledgerd/ledgerd/ledger"
)

// collector computes every metric at scrape time from the ledger, the hub
// and the slot, so nothing has to be kept in step.
type collector struct {
	s *Server

	safe, reported, confirmed, walEnd, retained *prometheus.Desc
	shapes, consumers, pending, oldest          *prometheus.Desc
	acks, deliveries, deliveredBytes            *prometheus.Desc
	outboxBytes, outboxTxns, streams            *prometheus.Desc
	overflows, dropped, slowCloses, reconnects  *prometheus.Desc
	slotUp                                      *prometheus.Desc
	overdelivered                               *prometheus.Desc
	commitFailures, commitsFailing              *prometheus.Desc
	evictions                                   *prometheus.Desc
	commits                                     *prometheus.Desc
	parts, spilledParts                         *prometheus.Desc
}

func newCollector(s *Server) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ledgerd_"+name, help, labels, nil)
	}
	return &collector{
		s:              s,
		safe:           d("safe_flush_lsn", "Safe flush LSN computed from memory: the smallest pending commit LSN, or the processed position when nothing is pending; as a byte position."),
		reported:       d("reported_flush_lsn", "Flush LSN offered to Postgres (durable, monotone; I6), as a byte position."),
		confirmed:      d("confirmed_flush_lsn", "confirmed_flush_lsn of the slot in pg_replication_slots, as a byte position."),
		walEnd:         d("wal_end_lsn", "pg_current_wal_lsn() of the server, as a byte position."),
		retained:       d("retained_wal_bytes", "WAL retained by the slot: pg_current_wal_lsn() - restart_lsn."),
		shapes:         d("shapes", "Shapes by state: tracked (live), pending (holding an unacked transaction), evicted (tombstones kept).", "state"),
		consumers:      d("consumers", "Consumers by state: live, streaming, gone.", "state"),
		pending:        d("pending_shapes", "Shapes with a routed transaction not yet acked."),
		oldest:         d("oldest_pending_age_seconds", "Age of the oldest pending transaction of any shape."),
		acks:           d("acks_total", "Shape acks applied."),
		deliveries:     d("deliveries_total", "Transaction frames written to change streams, resends included."),
		deliveredBytes: d("delivered_bytes_total", "Bytes of transaction frames written to change streams."),
		outboxBytes:    d("outbox_bytes", "Bytes held by consumers' outboxes of delivered, unacked transactions."),
		outboxTxns:     d("outbox_txns", "Transactions held by consumers' outboxes."),
		streams:        d("open_streams", "Open consumer change streams."),
		overflows:      d("outbox_overflows_total", "Outboxes that overflowed (transactions replayed from the slot later)."),
		dropped:        d("outbox_dropped_txns_total", "Transactions dropped from overflowed outboxes, to be replayed from the slot."),
		slowCloses:     d("slow_consumer_closes_total", "Change streams closed by the slow-consumer timeout."),
		reconnects:     d("stream_reconnects_total", "Reconnects of the replication stream to Postgres."),
		slotUp:         d("slot_status_up", "1 when the last read of pg_replication_slots succeeded."),
		overdelivered: d("overdelivered_changes_total", "Changes routed to a filtered shape only because a filter column was absent from them "+
			"(a delete's key-only old row under replica identity DEFAULT or USING INDEX, no old row, an unchanged TOAST value): possible over-deliveries."),
		commitFailures: d("commit_failures_total", "Group commits of the ledger file that failed (and were retried)."),
		commits:        d("commits_total", "Group commits of the ledger file: each is one bbolt transaction and one fsync."),
		commitsFailing: d("commits_failing", "1 while group commits of the ledger file are failing: acks are not durable and the flush does not advance."),
		evictions: d("evictions_total", "Shapes evicted since the start, by reason, whoever evicted them "+
			"(ledgerd_reconcile_evictions_total counts the reconciler's alone).", "reason"),
		parts:        d("txn_parts_total", "Transaction frames written as parts of a transaction sent in several frames (over -fragment-bytes), resends included."),
		spilledParts: d("spilled_parts_total", "Parts written to a change stream and let go from the outbox to make room for the rest of their transaction."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ctr := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	g(c.safe, float64(s.l.SafeLSN()))
	g(c.reported, float64(s.l.FlushLSN()))
	if s.cfg.Slot != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := s.cfg.Slot.SlotStatus(ctx)
		cancel()
		if err == nil {
			g(c.slotUp, 1)
			g(c.confirmed, float64(st.ConfirmedFlush))
			g(c.walEnd, float64(st.WALEnd))
			g(c.retained, float64(st.RetainedBytes))
		} else {
			g(c.slotUp, 0)
		}
	}
	counts := s.counts()
	g(c.shapes, float64(counts.Shapes), "tracked")
	g(c.shapes, float64(counts.ShapesPending), "pending")
	g(c.shapes, float64(counts.Tombstones), "evicted")
	g(c.consumers, float64(counts.ConsumersLive-counts.ConsumersStream), "live")
	g(c.consumers, float64(counts.ConsumersStream), "streaming")
	g(c.consumers, float64(counts.ConsumersGone), "gone")
	g(c.pending, float64(counts.ShapesPending))
	// The shape holding the smallest pending LSN is also the one pending
	// longest (transactions are tracked in commit order): one look, not a
	// copy of every pending shape per scrape.
	var age float64
	for _, h := range s.l.Holders(1) {
		if !h.PendingSince.IsZero() {
			if a := s.now().Sub(h.PendingSince).Seconds(); a > age {
				age = a
			}
		}
	}
	g(c.oldest, age)
	hs := s.hub.Stats()
	ctr(c.acks, hs.Acks)
	ctr(c.deliveries, hs.Deliveries)
	ctr(c.deliveredBytes, hs.DeliveredBytes)
	g(c.outboxBytes, float64(hs.OutboxBytes))
	g(c.outboxTxns, float64(hs.OutboxTxns))
	g(c.streams, float64(hs.Streams))
	ctr(c.overflows, hs.Overflows)
	ctr(c.dropped, hs.Dropped)
	ctr(c.slowCloses, hs.SlowCloses)
	ctr(c.overdelivered, hs.Overdelivered)
	ctr(c.parts, hs.Parts)
	ctr(c.spilledParts, hs.SpilledParts)
	var rc uint64
	if s.cfg.Reconnects != nil {
		rc = s.cfg.Reconnects()
	}
	ctr(c.reconnects, rc)
	ls := s.l.Stats()
	ctr(c.commitFailures, ls.CommitErrors)
	ctr(c.commits, ls.Commits)
	failing := 0.0
	if s.l.CommitHealth().Failing {
		failing = 1
	}
	g(c.commitsFailing, failing)
	evicted := s.l.Stats().Evictions
	for _, r := range ledger.EvictionReasons {
		ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(evicted[r]), string(r))
	}
	for r, n := range evicted {
		if !slices.Contains(ledger.EvictionReasons, r) {
			ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(n), string(r))
		}
	}
}
