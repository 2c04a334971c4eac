package reconcile

import (
	"context"
	"fmt"

	"github.com/ledgerd/ledgerd/ledger"
)

// SlotState is what Postgres says of the replication slot.
type SlotState struct {
	ConfirmedFlush ledger.LSN
	RestartLSN     ledger.LSN
	WALEnd         ledger.LSN // pg_current_wal_lsn()
	WALStatus      string     // reserved, extended, unreserved, lost
	SafeWALSize    int64      // bytes that can still be written before the slot is in danger of losing WAL
	HasSafeWALSize bool       // false when Postgres reports NULL (max_slot_wal_keep_size = -1) or it was not read
	Active         bool
	ActivePID      int
	RetainedBytes  int64 // WALEnd - RestartLSN
}

// SlotAuditor reads the slot's row of pg_replication_slots and the server's
// WAL end.
type SlotAuditor interface {
	AuditSlot(ctx context.Context) (SlotState, error)
}

// SlotAnomaly names what the audit found wrong with the confirmed flush.
type SlotAnomaly string

// Slot anomalies.
const (
	// AnomalyBackwards: confirmed_flush_lsn is below what an earlier audit
	// saw (Postgres crashed before writing the slot; transactions will be
	// replayed and skipped per shape, I2).
	AnomalyBackwards SlotAnomaly = "confirmed_flush_backwards"
	// AnomalyMovedElsewhere: confirmed_flush_lsn moved beyond the flush
	// position ledgerd reported: another client moved the slot
	// (pg_replication_slot_advance, another replication connection), which
	// can skip transactions pending for live shapes (I1).
	AnomalyMovedElsewhere SlotAnomaly = "confirmed_flush_moved_elsewhere"
	// AnomalyPastLedger: confirmed_flush_lsn is past the flush position the
	// ledger reported, however it got there: the ledger file does not hold
	// the slot's history (the slot was replaced or moved by someone else, or
	// the file is older than the slot). ledgerd refuses to start in that
	// state without -adopt-slot; running, it is reported once per episode.
	// Consumers may have missed transactions (I1).
	AnomalyPastLedger SlotAnomaly = "confirmed_flush_past_ledger"
)

// audit reads the slot, compares it with the previous audit and with the
// ledger's reported flush, and exports it. It returns the state read, or an
// error when the slot could not be read.
func (r *Reconciler) audit(ctx context.Context) (SlotState, bool, error) {
	if r.cfg.Slot == nil {
		return SlotState{}, false, nil
	}
	st, err := r.cfg.Slot.AuditSlot(ctx)
	if err != nil {
		r.m.slotUp.Set(0)
		return SlotState{}, false, fmt.Errorf("auditing the slot: %w", err)
	}
	r.m.slotUp.Set(1)
	reported := r.cfg.Ledger.FlushLSN()
	prev, hadPrev := r.lastSlot, r.hasLastSlot
	r.lastSlot, r.hasLastSlot = st, true
	r.m.exportSlot(st)

	log := r.log.With().Stringer("confirmed_flush_lsn", st.ConfirmedFlush).Stringer("reported_flush_lsn", reported).Logger()
	if hadPrev && st.ConfirmedFlush < prev.ConfirmedFlush {
		r.m.anomalies.WithLabelValues(string(AnomalyBackwards)).Inc()
		log.Warn().Str("anomaly", string(AnomalyBackwards)).Stringer("previous_confirmed_flush_lsn", prev.ConfirmedFlush).
			Msg("the slot's confirmed flush went backwards; Postgres will replay from it and ledgerd skips what shapes already acked")
		r.record(ledger.Event{Kind: EventSlotAnomaly, LSN: st.ConfirmedFlush, Reason: ledger.Reason(AnomalyBackwards),
			Detail: fmt.Sprintf("confirmed_flush_lsn %s, previously %s", st.ConfirmedFlush, prev.ConfirmedFlush)})
	}
	// A move seen between two audits.
	movedElsewhere := hadPrev && st.ConfirmedFlush > prev.ConfirmedFlush && st.ConfirmedFlush > reported
	if movedElsewhere {
		r.m.anomalies.WithLabelValues(string(AnomalyMovedElsewhere)).Inc()
		log.Error().Str("anomaly", string(AnomalyMovedElsewhere)).Stringer("previous_confirmed_flush_lsn", prev.ConfirmedFlush).
			Msg("the slot's confirmed flush moved beyond what ledgerd reported: another client is moving this slot; stop it, ledgerd must own the slot alone")
		r.record(ledger.Event{Kind: EventSlotAnomaly, LSN: st.ConfirmedFlush, Reason: ledger.Reason(AnomalyMovedElsewhere),
			Detail: fmt.Sprintf("confirmed_flush_lsn %s, previously %s, ledgerd reported %s", st.ConfirmedFlush, prev.ConfirmedFlush, reported)})
	}
	// The ledger records a flush before reporting it (I6), so a slot
	// confirmed past it holds history the ledger does not. Checked on every
	// audit, the first included: the start binds the ledger to the slot's
	// position, so even a fresh ledger is never behind its own slot.
	ahead := st.ConfirmedFlush > reported
	if ahead && !r.slotAhead {
		r.m.anomalies.WithLabelValues(string(AnomalyPastLedger)).Inc()
		log.Error().Str("anomaly", string(AnomalyPastLedger)).
			Msg("the slot's confirmed flush is past what this ledger reported: the ledger file does not hold the slot's history (slot replaced or moved by another client, or an older ledger file); consumers may have missed transactions")
		r.record(ledger.Event{Kind: EventSlotAnomaly, LSN: st.ConfirmedFlush, Reason: ledger.Reason(AnomalyPastLedger),
			Detail: fmt.Sprintf("confirmed_flush_lsn %s, ledgerd reported %s", st.ConfirmedFlush, reported)})
	}
	r.slotAhead = ahead
	if st.WALStatus == "lost" && prev.WALStatus != "lost" {
		log.Error().Str("wal_status", st.WALStatus).Msg("the slot is invalidated (wal_status lost): Postgres removed WAL it still needed")
	}
	return st, true, nil
}

// EventSlotAnomaly is the journal kind of a slot audit finding.
const EventSlotAnomaly = "slot_anomaly"
