// Package reconcile is ledgerd's liveness and progress policy (docs/operations.md, "Liveness"):
// one loop that, every pass, looks at the whole current state of the ledger
// and evicts what no live consumer holds any more, so that a dead consumer's
// shapes stop pinning the slot within TTL + 2 x the reconcile interval (I3).
//
// A pass is level-based and idempotent: it decides from what it reads now,
// and acts. It reads only what may have changed, so that its cost follows
// the changes, not the number of shapes (a million shapes must not cost a
// core): the consumers the ledger's change feed reports (registered,
// heartbeated, streaming, ended), those whose lease ran out (a min-heap of
// lease ends), those a pass could not finish with (the breaker held it back,
// a commit failed), and a bounded slice of a background sweep over every
// consumer, which runs the process probe and finds shapes left without a
// consumer. The progress probes walk the tracker's heap of pending shapes in
// order and stop where the rest are too young or pin too little; the
// catalog check is one per table. The first pass reads everything. Nothing
// else is queued between passes except what the progress probe needs to
// remember (a challenge sent, a defer answer received); losing that on a
// restart only restarts a grace. A pass whose context ends (shutdown) stops
// between two decisions; the next one decides the rest.
//
// Probes, in the order a pass applies them:
//
//   - lease: no heartbeat and no open stream for the TTL -> the consumer is
//     ended (lease_expired) with all its shapes, in one ledger transaction.
//     The expiry is conditional on the lease observed (ExpireConsumerIf), so
//     a consumer that registered again or heartbeated meanwhile is left alone.
//   - process (same host only, judged as the sweep comes to the consumer):
//     the registered pid, once seen running from here, is gone or started
//     at another time (pid reuse) -> process_gone.
//     A pid never seen running as registered is not judged: behind the same
//     host name may be another pid namespace (containers), where the
//     consumer's pid means nothing to this /proc.
//   - orphan: a shape whose consumer is gone or unknown is evicted with the
//     consumer's reason.
//   - inventory: a heartbeat's shape list omits a shape created before the
//     consumer's previous heartbeat -> not_in_inventory. A list is judged
//     by the pass after the heartbeat that brought it.
//   - WAL budget (optional): a pending shape pinning more than the budget of
//     pg_current_wal_lsn() - its pending LSN -> wal_budget.
//   - relation (with a Catalog): a shape's relation dropped, renamed, or
//     without a column its filter names -> relation_changed. One catalog
//     read a pass covers every distinct relation that has shapes; shapes
//     recorded before they were bound to a relation are bound by name. Not
//     a liveness guess: these evictions skip the circuit breaker.
//   - progress: pending past the stall grace without ack progress -> a
//     challenge on the consumer's stream; no ack progress or defer answer
//     within the challenge timeout -> stalled. A defer restarts the grace.
//
// Every eviction carries a reason, the evidence it was decided on and the
// actor "reconciler". Automatic evictions pass a circuit breaker (I5): at
// most max(EvictMaxFraction x shapes, 10) a rolling minute; when it trips the
// rest of the pass is skipped, logged once per trip and counted.
//
// Each pass also audits the slot (confirmed_flush, restart_lsn, wal_status,
// safe_wal_size, active pid, retained bytes), flags a confirmed flush that
// went backwards or that moved beyond what ledgerd reported, records the
// ledger's liveness tick (I5) and brings delivery in step with evictions.
//
// The Reconciler depends on small interfaces (Ledger, Challenger, Syncer,
// SlotAuditor, ProcessProber) and an injected clock, so every rule is tested
// without sleeping.
package reconcile
