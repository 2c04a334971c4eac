package reconcile

import "github.com/prometheus/client_golang/prometheus"

// metrics are the reconciler's Prometheus series. Names avoid those the API
// exports at scrape time (ledgerd_confirmed_flush_lsn, ledgerd_wal_end_lsn,
// ledgerd_retained_wal_bytes) so both can share one registry.
type metrics struct {
	passes       prometheus.Counter
	passErrors   prometheus.Counter
	lastPass     prometheus.Gauge
	evictions    *prometheus.CounterVec
	challenges   prometheus.Counter
	breakerTrips prometheus.Counter
	breakerOpen  prometheus.Gauge
	skipped      prometheus.Counter
	slotUp       prometheus.Gauge
	restart      prometheus.Gauge
	auditFlush   prometheus.Gauge
	safeWAL      prometheus.Gauge
	activePID    prometheus.Gauge
	slotActive   prometheus.Gauge
	auditRetain  prometheus.Gauge
	walStatus    *prometheus.GaugeVec
	anomalies    *prometheus.CounterVec
}

func newMetrics() *metrics {
	n := func(name string) string { return "ledgerd_reconcile_" + name }
	s := func(name string) string { return "ledgerd_slot_audit_" + name }
	m := &metrics{
		passes:     prometheus.NewCounter(prometheus.CounterOpts{Name: n("passes_total"), Help: "Reconcile passes run."}),
		passErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: n("pass_errors_total"), Help: "Reconcile passes that ended with an error (retried at the next pass)."}),
		lastPass:   prometheus.NewGauge(prometheus.GaugeOpts{Name: n("last_pass_timestamp_seconds"), Help: "Time of the last reconcile pass, as a Unix time."}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: n("evictions_total"),
			Help: "Shapes evicted by the reconciler, by reason."}, []string{"reason"}),
		challenges: prometheus.NewCounter(prometheus.CounterOpts{Name: n("challenges_total"), Help: "Challenges sent to shapes pending past the stall grace."}),
		breakerTrips: prometheus.NewCounter(prometheus.CounterOpts{Name: n("breaker_trips_total"),
			Help: "Times the eviction circuit breaker tripped (I5: at most a fraction of shapes, floor 10, evicted per minute)."}),
		breakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{Name: n("breaker_tripped"), Help: "1 while the eviction circuit breaker holds back evictions."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: n("evictions_skipped_total"),
			Help: "Evictions decided but held back by the circuit breaker (decided again by later passes)."}),
		slotUp:      prometheus.NewGauge(prometheus.GaugeOpts{Name: s("up"), Help: "1 when the last slot audit read pg_replication_slots."}),
		auditFlush:  prometheus.NewGauge(prometheus.GaugeOpts{Name: s("confirmed_flush_lsn"), Help: "confirmed_flush_lsn seen by the last slot audit, as a byte position."}),
		restart:     prometheus.NewGauge(prometheus.GaugeOpts{Name: s("restart_lsn"), Help: "restart_lsn of the slot at the last audit, as a byte position."}),
		safeWAL:     prometheus.NewGauge(prometheus.GaugeOpts{Name: s("safe_wal_size_bytes"), Help: "safe_wal_size of the slot at the last audit; -1 when unlimited or unknown."}),
		activePID:   prometheus.NewGauge(prometheus.GaugeOpts{Name: s("active_pid"), Help: "active_pid of the slot at the last audit (0 when inactive)."}),
		slotActive:  prometheus.NewGauge(prometheus.GaugeOpts{Name: s("active"), Help: "1 when the slot was active at the last audit."}),
		auditRetain: prometheus.NewGauge(prometheus.GaugeOpts{Name: s("retained_wal_bytes"), Help: "WAL retained by the slot at the last audit: pg_current_wal_lsn() - restart_lsn."}),
		walStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: s("wal_status"),
			Help: "1 for the slot's wal_status at the last audit (reserved, extended, unreserved, lost)."}, []string{"status"}),
		anomalies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: s("anomalies_total"),
			Help: "Slot audit findings: confirmed flush gone backwards, moved beyond what ledgerd reported, or past what the ledger holds."}, []string{"anomaly"}),
	}
	for _, a := range []SlotAnomaly{AnomalyBackwards, AnomalyMovedElsewhere, AnomalyPastLedger} {
		m.anomalies.WithLabelValues(string(a))
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.passes, m.passErrors, m.lastPass, m.evictions, m.challenges, m.breakerTrips,
		m.breakerOpen, m.skipped, m.slotUp, m.auditFlush, m.restart, m.safeWAL, m.activePID, m.slotActive,
		m.auditRetain, m.walStatus, m.anomalies}
}

func (m *metrics) exportSlot(st SlotState) {
	m.auditFlush.Set(float64(st.ConfirmedFlush))
	m.restart.Set(float64(st.RestartLSN))
	if st.HasSafeWALSize {
		m.safeWAL.Set(float64(st.SafeWALSize))
	} else {
		m.safeWAL.Set(-1)
	}
	m.activePID.Set(float64(st.ActivePID))
	if st.Active {
		m.slotActive.Set(1)
	} else {
		m.slotActive.Set(0)
	}
	m.auditRetain.Set(float64(st.RetainedBytes))
	m.walStatus.Reset()
	if st.WALStatus != "" {
		m.walStatus.WithLabelValues(st.WALStatus).Set(1)
	}
}

// Describe implements prometheus.Collector.
func (r *Reconciler) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range r.m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (r *Reconciler) Collect(ch chan<- prometheus.Metric) {
	for _, c := range r.m.collectors() {
		c.Collect(ch)
	}
}
