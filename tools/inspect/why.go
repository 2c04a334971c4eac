package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

type whyCommand struct{ app *App }

// Causes of retained WAL, the "cause" field of WhyReport.
const (
	causeShapePin    = "shape_pin"        // a pending shape holds ledgerd's flush
	causeOtherSlot   = "other_slot"       // another slot's restart_lsn is older
	causeInactive    = "inactive_slot"    // ledgerd's slot has no connection
	causeLongXact    = "long_transaction" // restart_lsn held by a running transaction
	causeSlotMissing = "slot_missing"     // ledgerd's slot does not exist
	causeSlotLost    = "slot_lost"        // the slot was invalidated
	causeNothing     = "nothing"          // WAL goes at the next checkpoint
	causeUnknown     = "unknown"          // without -pg nothing more can be said
)

// WhyReport is the answer of "inspect why".
type WhyReport struct {
	Source    SourceInfo `json:"source"`
	Cause     string     `json:"cause"`
	Shape     string     `json:"shape,omitempty"`
	Consumer  string     `json:"consumer,omitempty"`
	Slot      string     `json:"slot,omitempty"`
	PID       int        `json:"pid,omitempty"`
	Retained  *int64     `json:"retained_bytes,omitempty"`
	Paragraph string     `json:"paragraph"`
	Also      []string   `json:"also,omitempty"`
}

func (c *whyCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.app.commandFlags("why", args, ""); err != nil {
		return err
	}
	src, err := c.app.load(ctx, false)
	if err != nil {
		return err
	}
	rep := buildWhy(src, c.app.g.Policy)
	if c.app.g.JSON {
		return writeJSON(c.app.env.Stdout, rep)
	}
	return rep.writeText(c.app.env.Stdout)
}

func (r WhyReport) writeText(w io.Writer) error {
	fmt.Fprintln(w, r.Source.Line)
	fmt.Fprintln(w, wrap(r.Paragraph, 100))
	for _, a := range r.Also {
		fmt.Fprintln(w, wrap("also: "+a, 100))
	}
	return nil
}

// buildWhy finds the root cause of retained WAL. WAL is kept back to the
// oldest restart_lsn of all slots, so the slot with the oldest restart_lsn
// is the one to explain; for ledgerd's own slot the cause is a pending
// shape (its confirmed flush is held), no connection at all, or a running
// transaction holding restart_lsn behind the confirmed flush.
func buildWhy(src *Source, p Policy) WhyReport {
	rep := WhyReport{Source: src.info()}
	hs := holders(src, p)
	slotName := src.State.Meta.Identity.Slot
	pg := src.PG
	if pg == nil {
		if len(hs) > 0 {
			rep.shapePin(src, hs, "")
		} else {
			rep.Cause = causeUnknown
			rep.Paragraph = "Nothing in the ledger pins the flush: " + noPinText(src) +
				" Whatever retains WAL is outside ledgerd's ledger; run again with -pg to see restart_lsn, other slots and long-running transactions."
		}
		return rep
	}
	oldest := pg.oldestSlot()
	ours := pg.Slot
	switch {
	case ours == nil && oldest == nil:
		rep.Cause, rep.Slot = causeSlotMissing, slotName
		rep.Paragraph = fmt.Sprintf("Slot %s does not exist in Postgres and no other slot holds WAL: nothing retains WAL; it will go at the next checkpoint. "+
			"Start ledgerd with -create-slot to create its slot.", slotName)
		return rep
	case ours != nil && ours.WALStatus == "lost":
		rep.Cause, rep.Slot = causeSlotLost, slotName
		rep.Paragraph = fmt.Sprintf("Slot %s was invalidated by Postgres (wal_status lost, max_slot_wal_keep_size exceeded): it no longer retains WAL and cannot stream. "+
			"Drop it (SELECT pg_drop_replication_slot('%s')), then start ledgerd with -create-slot -adopt-slot; every consumer must resynchronise.", slotName, slotName)
		return rep
	case oldest != nil && (ours == nil || oldest.Name != ours.Name && oldest.RestartLSN < ours.RestartLSN):
		rep.otherSlot(pg, oldest)
		if ours == nil {
			rep.Also = append(rep.Also, fmt.Sprintf("ledgerd's slot %s does not exist; start ledgerd with -create-slot.", slotName))
		}
		if len(hs) > 0 {
			var sub WhyReport
			sub.shapePin(src, hs, "")
			rep.Also = append(rep.Also, "within ledgerd's own slot: "+sub.Paragraph)
		}
		return rep
	}
	rep.Slot, rep.Retained = ours.Name, &ours.RetainedBytes
	// The slot's retained WAL splits in two: WAL end - confirmed flush is
	// what ledgerd has not confirmed (a pending shape, or no ledgerd at all);
	// confirmed flush - restart_lsn is what decoding still needs (a running
	// transaction). The larger part is the root cause.
	var confLag, restLag int64
	if pg.WALEnd > ours.ConfirmedFlush {
		confLag = int64(pg.WALEnd - ours.ConfirmedFlush)
	}
	if ours.ConfirmedFlush > ours.RestartLSN {
		restLag = int64(ours.ConfirmedFlush - ours.RestartLSN)
	}
	x := pg.OldestXact
	longXact := x != nil && restLag > 0
	switch {
	case len(hs) > 0 && confLag > 0 && (confLag >= restLag || !longXact):
		rep.shapePin(src, hs, fmt.Sprintf("Slot %s retains %s (restart_lsn %s, confirmed_flush_lsn %s, WAL end %s). ",
			ours.Name, bytesText(ours.RetainedBytes), ours.RestartLSN, ours.ConfirmedFlush, pg.WALEnd))
		if !ours.Active {
			rep.Also = append(rep.Also, fmt.Sprintf("slot %s is also inactive: no ledgerd is connected to it, so nothing can advance it until ledgerd runs.", ours.Name))
		}
	case longXact && (restLag > confLag || ours.Active):
		rep.Cause, rep.PID = causeLongXact, x.PID
		who := fmt.Sprintf("pid %d (%s, database %s, user %s, state %s, xid %s, backend_xmin %s) started %s, %s ago",
			x.PID, orDash(x.BackendType), orDash(x.Database), orDash(x.User), orDash(x.State), orDash(x.Xid), orDash(x.Xmin),
			ts(x.Start), dur(time.Duration(x.AgeSeconds*float64(time.Second))))
		fix := fmt.Sprintf("Once it commits or is cancelled (SELECT pg_cancel_backend(%d))", x.PID)
		if x.GID != "" {
			who = fmt.Sprintf("the prepared transaction %q (database %s, owner %s, xid %s) prepared %s, %s ago",
				x.GID, orDash(x.Database), orDash(x.User), orDash(x.Xid), ts(x.Start), dur(time.Duration(x.AgeSeconds*float64(time.Second))))
			fix = fmt.Sprintf("Once it is finished (COMMIT PREPARED '%s' or ROLLBACK PREPARED '%s')", x.GID, x.GID)
		}
		rep.Paragraph = fmt.Sprintf("Slot %s has confirmed up to %s, but its restart_lsn %s stays %s behind because logical decoding must keep the WAL of the oldest transaction still running: "+
			"%s. The slot's catalog_xmin %s is held for the same reason. "+
			"%s, restart_lsn moves at the next running-transactions record and the WAL goes at the next checkpoint.",
			ours.Name, ours.ConfirmedFlush, ours.RestartLSN, bytesText(restLag), who, orDash(ours.CatalogXmin), fix)
		if !ours.Active && confLag > 0 {
			rep.Also = append(rep.Also, fmt.Sprintf("slot %s is also inactive: no ledgerd is connected, so %s past its confirmed flush waits for ledgerd to run.", ours.Name, bytesText(confLag)))
		}
	case !ours.Active && confLag > 0:
		rep.Cause = causeInactive
		rep.Paragraph = fmt.Sprintf("Slot %s (ledgerd's) is inactive: no ledgerd is connected, so its confirmed_flush_lsn %s stays put while the WAL end is %s; it retains %s from restart_lsn %s. "+
			"%s Start ledgerd against this database; with nothing pending it confirms up to the WAL end within one status interval.",
			ours.Name, ours.ConfirmedFlush, pg.WALEnd, bytesText(ours.RetainedBytes), ours.RestartLSN, noPinText(src))
	default:
		state := fmt.Sprintf("active (pid %d)", ours.ActivePID)
		if !ours.Active {
			state = "inactive"
		}
		rep.Cause = causeNothing
		rep.Paragraph = fmt.Sprintf("Nothing holds WAL: no shape is pending, slot %s is %s and has confirmed up to %s of %s, and no long-running transaction holds its restart_lsn %s. "+
			"The %s still on disk will go at the next checkpoint (restart_lsn catches up at the next running-transactions record).",
			ours.Name, state, ours.ConfirmedFlush, pg.WALEnd, ours.RestartLSN, bytesText(ours.RetainedBytes))
	}
	for _, o := range pg.Others {
		if !o.Active && o.RetainedBytes > 0 && (rep.Cause != causeOtherSlot || o.Name != rep.Slot) {
			rep.Also = append(rep.Also, fmt.Sprintf("slot %s is inactive and retains %s (restart_lsn %s).", o.Name, bytesText(o.RetainedBytes), o.RestartLSN))
		}
	}
	return rep
}

func (r *WhyReport) otherSlot(pg *PGState, o *SlotRow) {
	r.Cause, r.Slot, r.Retained = causeOtherSlot, o.Name, &o.RetainedBytes
	state := fmt.Sprintf("active (pid %d)", o.ActivePID)
	fix := "its client is not confirming progress; fix or stop that client"
	if !o.Active {
		state = "inactive (no client connected)"
		fix = fmt.Sprintf("if nothing will use it again, drop it: SELECT pg_drop_replication_slot('%s')", o.Name)
	}
	oursText := "ledgerd's slot does not exist"
	if pg.Slot != nil {
		oursText = fmt.Sprintf("ledgerd's slot %s only retains %s (restart_lsn %s)", pg.Slot.Name, bytesText(pg.Slot.RetainedBytes), pg.Slot.RestartLSN)
	}
	kind := o.Type
	if o.Plugin != "" {
		kind += ", " + o.Plugin
	}
	r.Paragraph = fmt.Sprintf("WAL is retained by another slot: %s (%s) is %s with restart_lsn %s, %s behind the WAL end %s; %s. Postgres keeps WAL back to the oldest slot, so %s.",
		o.Name, kind, state, o.RestartLSN, bytesText(o.RetainedBytes), pg.WALEnd, oursText, fix)
}

// shapePin explains the worst holder.
func (r *WhyReport) shapePin(src *Source, hs []Holder, prefix string) {
	h := hs[0]
	r.Cause, r.Shape, r.Consumer = causeShapePin, h.Shape, h.Consumer
	var b strings.Builder
	b.WriteString(prefix)
	if h.Certain {
		fmt.Fprintf(&b, "ledgerd's flush is held by shape %s (consumer %s, table %s): it has not acked the transaction at %s, pending since %s (%s ago)",
			h.Shape, h.Consumer, h.Table, h.PendingLSN, tsp(h.PendingSince), dur(time.Duration(h.PinnedSeconds*float64(time.Second))))
	} else {
		acked := "it has never acked"
		if h.LastAck != nil {
			acked = "it last acked at " + ts(*h.LastAck)
		}
		fmt.Fprintf(&b, "ledgerd's flush is most likely held by shape %s (consumer %s, table %s): its durable flushed LSN %s is below the last flush ledgerd reported, %s, "+
			"and %s (derived from the file, which keeps no pending positions; use -url to confirm)",
			h.Shape, h.Consumer, h.Table, h.FlushedLSN, src.State.Meta.LastFlush, acked)
	}
	if h.PinnedBytes != nil {
		fmt.Fprintf(&b, "; it pins %s", bytesText(*h.PinnedBytes))
	}
	fmt.Fprintf(&b, ". Its consumer's lease: %s. The reconciler: %s.", h.Lease.Text, h.Next.What)
	if len(hs) > 1 {
		word := "other shapes are"
		if len(hs) == 2 {
			word = "other shape is"
		}
		qual := "pending"
		if !h.Certain {
			qual = "possibly pending"
		}
		fmt.Fprintf(&b, " %d %s %s too (inspect holders).", len(hs)-1, word, qual)
	}
	fmt.Fprintf(&b, " To release it now, evict it on the running daemon: POST /v1/shapes/%s/evict.", h.Shape)
	r.Paragraph = b.String()
}

// noPinText says why the ledger shows no holder.
func noPinText(src *Source) string {
	if src.Daemon != nil && src.Daemon.Status != nil {
		return fmt.Sprintf("the daemon has no pending shape (safe flush %s).", src.Daemon.Status.SafeFlushLSN)
	}
	m := src.State.Meta
	return fmt.Sprintf("the ledger's last reported flush %s is at its processed position %s, so no shape was pending at the last report.", m.LastFlush, m.Position)
}
