package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

type statusCommand struct{ app *App }

// StatusReport is the answer of "inspect status".
type StatusReport struct {
	Source SourceInfo `json:"source"`
	Ledger LedgerMeta `json:"ledger"`
	// Figure values carry where they come from: file, daemon, postgres;
	// an unknown figure is left out.
	SafeFlush      Figure         `json:"safe_flush_lsn,omitzero"`
	ReportedFlush  Figure         `json:"reported_flush_lsn,omitzero"`
	ConfirmedFlush Figure         `json:"confirmed_flush_lsn,omitzero"`
	RestartLSN     Figure         `json:"restart_lsn,omitzero"`
	WALEnd         Figure         `json:"wal_end,omitzero"`
	Retained       Figure         `json:"retained_bytes,omitzero"`
	WALStatus      Figure         `json:"wal_status,omitzero"`
	SafeWALSize    *int64         `json:"safe_wal_size,omitempty"`
	ActivePID      int            `json:"active_pid,omitempty"`
	Consumers      map[string]int `json:"consumers"`
	Shapes         map[string]int `json:"shapes"`
	Tombstones     map[string]int `json:"tombstones_by_reason"`
	// OtherSlots and OldestXact come from Postgres (-pg).
	OtherSlots []SlotRow `json:"other_slots,omitempty"`
	OldestXact *Xact     `json:"oldest_xact,omitempty"`
	Notes      []string  `json:"notes,omitempty"`
	ledgerFrom string    // file or snapshot

	// KeyOnlyTables are the tables whose deletes carry only their key
	// while shapes filter them on other columns (replica identity not
	// FULL): those deletes reach the shapes unfiltered. KeyOnlyFrom says
	// where the list comes from (postgres or daemon); both are left out
	// when no shape has a filter or nobody could say.
	KeyOnlyTables []wire.KeyOnlyTable `json:"key_only_tables,omitzero"`
	KeyOnlyFrom   string              `json:"key_only_tables_from,omitempty"`
}

// Figure is a value with where it comes from; an empty From means unknown.
type Figure struct {
	Value string `json:"value,omitempty"`
	From  string `json:"from,omitempty"`
}

func (f Figure) text() string {
	if f.From == "" {
		return "unknown"
	}
	return f.Value + "  (" + f.From + ")"
}

// LedgerMeta is the ledger file's header.
type LedgerMeta struct {
	SystemID      string     `json:"system_id"`
	Timeline      int32      `json:"timeline"`
	Database      string     `json:"database"`
	Slot          string     `json:"slot"`
	SchemaVersion int        `json:"schema_version"`
	CreatedAt     *time.Time `json:"created_at,omitempty"`
	OpenedAt      *time.Time `json:"opened_at,omitempty"`
	LastTick      *time.Time `json:"last_tick,omitempty"`
	CleanShutdown *time.Time `json:"clean_shutdown,omitempty"`
	LastFlush     string     `json:"last_reported_flush_lsn"`
	Position      string     `json:"position"`
}

func metaView(m ledger.Meta) LedgerMeta {
	return LedgerMeta{SystemID: m.Identity.SystemID, Timeline: m.Identity.Timeline, Database: m.Identity.Database,
		Slot: m.Identity.Slot, SchemaVersion: m.SchemaVersion, CreatedAt: tp(m.CreatedAt), OpenedAt: tp(m.OpenedAt),
		LastTick: tp(m.Tick), CleanShutdown: tp(m.CleanShutdown), LastFlush: m.LastFlush.String(), Position: m.Position.String()}
}

func (c *statusCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.app.commandFlags("status", args, ""); err != nil {
		return err
	}
	src, err := c.app.load(ctx, false)
	if err != nil {
		return err
	}
	rep := buildStatus(src, c.app.g.Policy)
	if c.app.g.JSON {
		return writeJSON(c.app.env.Stdout, rep)
	}
	return rep.writeText(c.app.env.Stdout)
}

func buildStatus(src *Source, p Policy) StatusReport {
	st := src.State
	rep := StatusReport{Source: src.info(), Ledger: metaView(st.Meta),
		Consumers: map[string]int{"total": 0, "streaming": 0, "live": 0, "expired": 0, "gone": 0},
		Shapes:    map[string]int{"total": len(st.Shapes)}, Tombstones: map[string]int{}}
	rep.ReportedFlush = Figure{st.Meta.LastFlush.String(), src.Kind}
	rep.ledgerFrom = src.Kind
	for _, cn := range st.Consumers {
		rep.Consumers["total"]++
		rep.Consumers[leaseState(src, cn.ID).State]++
	}
	for _, t := range st.Tombstones {
		rep.Tombstones[string(t.Reason)]++
	}
	if n := len(st.Problems); n > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d journal records could not be read and are left out: run verify", n))
	}
	var live *wire.Status
	if src.Daemon != nil {
		live = src.Daemon.Status
		if src.Daemon.Err != "" {
			rep.Notes = append(rep.Notes, "daemon views unavailable: "+src.Daemon.Err)
		}
	}
	if live != nil {
		rep.SafeFlush = Figure{live.SafeFlushLSN, fromDaemon}
		rep.ReportedFlush = Figure{live.ReportedFlushLSN, fromDaemon}
		rep.Shapes["pending"] = live.Counts.ShapesPending
		if live.WALEnd != "" {
			rep.ConfirmedFlush = Figure{live.ConfirmedFlushLSN, fromDaemon}
			rep.RestartLSN = Figure{live.RestartLSN, fromDaemon}
			rep.WALEnd = Figure{live.WALEnd, fromDaemon}
			rep.Retained = Figure{fmt.Sprint(live.RetainedBytes), fromDaemon}
			rep.WALStatus = Figure{live.WALStatus, fromDaemon}
		}
		if live.SlotError != "" {
			rep.Notes = append(rep.Notes, "the daemon could not read its slot: "+live.SlotError)
		}
	} else {
		rep.Shapes["possibly_pending"] = len(derivedHolders(src, p, 0))
		rep.Notes = append(rep.Notes, "safe flush and pending shapes live in the daemon's memory: use -url for them")
	}
	keyOnlyStatus(src, live, &rep)
	if pg := src.PG; pg != nil {
		rep.WALEnd = Figure{pg.WALEnd.String(), fromPG}
		if s := pg.Slot; s != nil {
			rep.ConfirmedFlush = Figure{s.ConfirmedFlush.String(), fromPG}
			rep.RestartLSN = Figure{s.RestartLSN.String(), fromPG}
			rep.Retained = Figure{fmt.Sprint(s.RetainedBytes), fromPG}
			rep.WALStatus = Figure{s.WALStatus, fromPG}
			rep.SafeWALSize = s.SafeWALSize
			rep.ActivePID = s.ActivePID
		} else {
			rep.Notes = append(rep.Notes, fmt.Sprintf("slot %q does not exist in Postgres", st.Meta.Identity.Slot))
		}
		rep.OtherSlots, rep.OldestXact = pg.Others, pg.OldestXact
		rep.Notes = append(rep.Notes, pg.Notes...)
	} else if live == nil || live.WALEnd == "" {
		rep.Notes = append(rep.Notes, "confirmed flush, WAL end and retained WAL come from Postgres: give -pg")
	}
	return rep
}

func (r StatusReport) writeText(w io.Writer) error {
	fmt.Fprintln(w, r.Source.Line)
	m := r.Ledger
	fmt.Fprintf(w, "slot %s on system %s (timeline %d, database %s)\n", m.Slot, m.SystemID, m.Timeline, orDash(m.Database))
	t := newTable(w)
	t.row("safe flush", r.SafeFlush.text())
	t.row("reported flush", r.ReportedFlush.text())
	t.row("confirmed flush", r.ConfirmedFlush.text())
	t.row("restart_lsn", r.RestartLSN.text())
	t.row("WAL end", r.WALEnd.text())
	ret := r.Retained.text()
	if r.Retained.From != "" {
		var n int64
		fmt.Sscan(r.Retained.Value, &n)
		ret = bytesText(n) + "  (" + r.Retained.From + ")"
	}
	t.row("retained WAL", ret)
	t.row("wal_status", r.WALStatus.text())
	if r.SafeWALSize != nil {
		t.row("safe_wal_size", bytesText(*r.SafeWALSize))
	}
	if r.ActivePID != 0 {
		t.row("active pid", fmt.Sprint(r.ActivePID))
	}
	t.row("processed position", m.Position+"  ("+r.ledgerFrom+")")
	t.row("last tick", tsp(m.LastTick))
	t.row("clean shutdown", tsp(m.CleanShutdown))
	t.row("consumers", fmt.Sprintf("%d: %d streaming, %d live, %d expired, %d gone", r.Consumers["total"],
		r.Consumers["streaming"], r.Consumers["live"], r.Consumers["expired"], r.Consumers["gone"]))
	if n, ok := r.Shapes["pending"]; ok {
		t.row("shapes", fmt.Sprintf("%d: %d pending (daemon)", r.Shapes["total"], n))
	} else {
		t.row("shapes", fmt.Sprintf("%d: %d possibly pending (derived from the file)", r.Shapes["total"], r.Shapes["possibly_pending"]))
	}
	tomb := 0
	s := ""
	for _, k := range sortedKeys(r.Tombstones) {
		tomb += r.Tombstones[k]
		s += fmt.Sprintf(", %s %d", k, r.Tombstones[k])
	}
	t.row("tombstones", fmt.Sprintf("%d%s", tomb, s))
	if r.KeyOnlyFrom != "" {
		v := "none: every filtered table is FULL or filtered on its key"
		if n := len(r.KeyOnlyTables); n > 0 {
			v = fmt.Sprintf("%d table(s) whose deletes reach filtered shapes unfiltered", n)
		}
		t.row("key-only deletes", v+"  ("+r.KeyOnlyFrom+")")
	}
	if x := r.OldestXact; x != nil {
		who := fmt.Sprintf("pid %d", x.PID)
		if x.GID != "" {
			who = fmt.Sprintf("prepared %q", x.GID)
		}
		t.row("oldest xact", fmt.Sprintf("%s, started %s (%s ago), state %s, xid %s, backend_xmin %s  (postgres)", who, ts(x.Start),
			dur(time.Duration(x.AgeSeconds*float64(time.Second))), orDash(x.State), orDash(x.Xid), orDash(x.Xmin)))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(r.OtherSlots) > 0 {
		fmt.Fprintln(w, "other slots (postgres):")
		t := newTable(w)
		t.row("  SLOT", "TYPE", "ACTIVE", "RESTART_LSN", "RETAINED", "WAL_STATUS")
		for _, o := range r.OtherSlots {
			active := "no"
			if o.Active {
				active = fmt.Sprintf("pid %d", o.ActivePID)
			}
			t.row("  "+o.Name, o.Type, active, o.RestartLSN.String(), bytesText(o.RetainedBytes), orDash(o.WALStatus))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(r.KeyOnlyTables) > 0 {
		fmt.Fprintf(w, "tables whose deletes carry only the key, filtered on other columns (%s):\n", r.KeyOnlyFrom)
		t := newTable(w)
		t.row("  TABLE", "REPLICA IDENTITY", "FILTER COLUMNS", "SHAPES")
		for _, k := range r.KeyOnlyTables {
			t.row("  "+k.Table, k.ReplicaIdentity, strings.Join(k.Columns, ","), fmt.Sprint(k.Shapes))
		}
		if err := t.flush(); err != nil {
			return err
		}
		fmt.Fprintln(w, "  their deletes reach every shape filtered on those columns (counted by ledgerd_overdelivered_changes_total);")
		fmt.Fprintln(w, "  fix: ALTER TABLE <table> REPLICA IDENTITY FULL, or run ledgerd with -replica-identity full")
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note: "+n)
	}
	return nil
}

func tsp(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return ts(*t)
}
