package main

import (
	"context"
	"fmt"
)

type verifyCommand struct{ app *App }

// VerifyReport is the answer of "inspect verify".
type VerifyReport struct {
	Source   SourceInfo    `json:"source"`
	OK       bool          `json:"ok"`
	Problems []ProblemView `json:"problems"`
	Checked  []string      `json:"checked"`
	// Warnings are worth a look but break no invariant (exit status 0).
	Warnings []string `json:"warnings,omitempty"`
}

// ProblemView is one violation.
type ProblemView struct {
	Check   string `json:"check"`
	Subject string `json:"subject,omitempty"`
	Detail  string `json:"detail"`
}

func (c *verifyCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.app.commandFlags("verify", args, ""); err != nil {
		return err
	}
	src, err := c.app.load(ctx, true)
	if err != nil {
		return err
	}
	rep := buildVerify(src)
	w := c.app.env.Stdout
	if c.app.g.JSON {
		if err := writeJSON(w, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(w, rep.Source.Line)
		fmt.Fprintln(w, "checked: "+joinComma(rep.Checked))
		for _, p := range rep.Problems {
			subj := ""
			if p.Subject != "" {
				subj = " " + p.Subject
			}
			fmt.Fprintf(w, "PROBLEM %s%s: %s\n", p.Check, subj, p.Detail)
		}
		for _, x := range rep.Warnings {
			fmt.Fprintln(w, "warning: "+x)
		}
		if rep.OK {
			fmt.Fprintln(w, "ok: no problem found")
		} else {
			fmt.Fprintf(w, "%d problem(s) found\n", len(rep.Problems))
		}
	}
	if !rep.OK {
		return errProblemsFound
	}
	return nil
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ", "
		}
		out += x
	}
	return out
}

// buildVerify gathers ledger.Verify's findings and, with -pg, checks the
// ledger against pg_replication_slots: the slot exists, is a pgoutput slot
// of the ledger's database and system, is not invalidated, and has not
// confirmed beyond the last flush the ledger made durable (I6: something
// else moved it, and transactions a live shape has not acked may be gone:
// I1).
func buildVerify(src *Source) VerifyReport {
	rep := VerifyReport{Source: src.info(), Problems: []ProblemView{},
		Checked: []string{"bbolt consistency", "record checksums", "ledger invariants"}}
	for _, p := range src.Problems {
		rep.Problems = append(rep.Problems, ProblemView{p.Check, p.Subject, p.Detail})
	}
	add := func(check, subject, format string, args ...any) {
		rep.Problems = append(rep.Problems, ProblemView{check, subject, fmt.Sprintf(format, args...)})
	}
	m := src.State.Meta
	if pg := src.PG; pg != nil {
		rep.Checked = append(rep.Checked, "ledger against pg_replication_slots")
		if pg.SystemID != "" && m.Identity.SystemID != "" && pg.SystemID != m.Identity.SystemID {
			add("pg_system", "", "the ledger belongs to system %s but -pg reaches system %s: point -pg at the ledger's server",
				m.Identity.SystemID, pg.SystemID)
		}
		s := pg.Slot
		switch {
		case s == nil:
			add("pg_slot_missing", m.Identity.Slot, "slot %q does not exist in Postgres: ledgerd cannot stream; start it with -create-slot -adopt-slot (a new slot starts at the current WAL end, so changes since %s are lost to consumers, and every consumer must resynchronise)",
				m.Identity.Slot, m.LastFlush)
		default:
			if s.Type != "logical" || s.Plugin != "pgoutput" {
				add("pg_slot_kind", s.Name, "slot is %s/%s, want a logical pgoutput slot", s.Type, orDash(s.Plugin))
			}
			if m.Identity.Database != "" && s.Database != "" && s.Database != m.Identity.Database {
				add("pg_slot_database", s.Name, "slot is in database %s but the ledger in %s", s.Database, m.Identity.Database)
			}
			if s.WALStatus == "lost" {
				add("pg_slot_lost", s.Name, "wal_status is lost: Postgres invalidated the slot (max_slot_wal_keep_size); it cannot stream again")
			}
			if m.LastFlush != 0 && s.ConfirmedFlush > m.LastFlush {
				add("pg_confirmed_beyond_ledger", s.Name, "confirmed_flush_lsn %s is beyond the ledger's last reported flush %s: something other than this ledger advanced the slot, so transactions that shapes had not acked may be gone (I1)",
					s.ConfirmedFlush, m.LastFlush)
			}
			if pg.WALEnd != 0 && m.Position > pg.WALEnd {
				add("pg_position_beyond_wal_end", s.Name, "the ledger processed up to %s but the server's WAL ends at %s: the ledger belongs to another server or the server was restored from a backup", m.Position, pg.WALEnd)
			}
			switch {
			case s.WALStatus == "unreserved":
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("slot %s: wal_status unreserved: it is past max_slot_wal_keep_size and will be invalidated at the next checkpoint unless it advances", s.Name))
			case s.SafeWALSize != nil && *s.SafeWALSize < 64<<20:
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("slot %s: only %s of WAL left before max_slot_wal_keep_size invalidates it", s.Name, bytesText(*s.SafeWALSize)))
			}
			if s.Active && src.Kind == fromFile {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("slot %s is in use by pid %d while this ledger file is not open by a ledgerd: is another ledgerd (with another file) or another client reading the slot?", s.Name, s.ActivePID))
			}
			for _, sh := range src.State.Shapes {
				if pg.WALEnd != 0 && sh.FlushedLSN > pg.WALEnd {
					add("pg_flushed_beyond_wal_end", sh.ID, "flushed LSN %s is beyond the server's WAL end %s: the ledger belongs to another server or was restored from elsewhere", sh.FlushedLSN, pg.WALEnd)
				}
			}
		}
	}
	rep.OK = len(rep.Problems) == 0
	return rep
}
