package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/ledger"
)

// PGState is the live slot and server state read with -pg.
type PGState struct {
	WALEnd   ledger.LSN `json:"wal_end"` // pg_current_wal_lsn()
	SystemID string     `json:"system_identifier"`
	// Slot is the row of the ledger's slot; nil when it does not exist.
	Slot   *SlotRow  `json:"slot"`
	Others []SlotRow `json:"other_slots"`
	// OldestXact is the oldest transaction still running with an xid, or
	// prepared, if any: the one that holds logical decoding's restart_lsn.
	OldestXact *Xact `json:"oldest_xact,omitempty"`
	// Errors of optional queries (pg_stat_activity needs privileges).
	Notes []string `json:"notes,omitempty"`
}

// SlotRow is one row of pg_replication_slots.
type SlotRow struct {
	Name           string     `json:"name"`
	Type           string     `json:"type"`
	Plugin         string     `json:"plugin,omitempty"`
	Database       string     `json:"database,omitempty"`
	Active         bool       `json:"active"`
	ActivePID      int        `json:"active_pid,omitempty"`
	Xmin           string     `json:"xmin,omitempty"`
	CatalogXmin    string     `json:"catalog_xmin,omitempty"`
	RestartLSN     ledger.LSN `json:"restart_lsn"`
	ConfirmedFlush ledger.LSN `json:"confirmed_flush_lsn"`
	WALStatus      string     `json:"wal_status,omitempty"`
	SafeWALSize    *int64     `json:"safe_wal_size,omitempty"`
	RetainedBytes  int64      `json:"retained_bytes"` // pg_current_wal_lsn() - restart_lsn
}

// Xact is a running transaction with an xid (pg_stat_activity), or a
// prepared one (pg_prepared_xacts: GID set, PID 0).
type Xact struct {
	PID         int       `json:"pid,omitempty"`
	GID         string    `json:"gid,omitempty"`
	Database    string    `json:"database,omitempty"`
	User        string    `json:"user,omitempty"`
	State       string    `json:"state,omitempty"`
	Xid         string    `json:"xid,omitempty"`
	Xmin        string    `json:"backend_xmin,omitempty"`
	Start       time.Time `json:"xact_start"`
	AgeSeconds  float64   `json:"age_seconds"`
	Query       string    `json:"query,omitempty"`
	BackendType string    `json:"backend_type,omitempty"`
}

// readPG connects to Postgres and reads the slots, the WAL end and the oldest
// running transaction. slot is the slot named in the ledger's metadata.
func readPG(ctx context.Context, connString, slot string) (*PGState, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return nil, fmt.Errorf("connecting to Postgres (-pg): %w; check the connection string (postgres://user@host:port/db)", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st := &PGState{}
	var walEnd string
	if err := conn.QueryRow(ctx, `SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text`).Scan(&walEnd); err != nil {
		return nil, fmt.Errorf("reading pg_current_wal_lsn(): %w", err)
	}
	st.WALEnd, _ = ledger.ParseLSN(walEnd)
	if err := conn.QueryRow(ctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&st.SystemID); err != nil {
		st.Notes = append(st.Notes, "system identifier unknown: "+err.Error())
	}
	rows, err := conn.Query(ctx, `
SELECT slot_name::text, slot_type, coalesce(plugin::text, ''), coalesce(database::text, ''), active,
       coalesce(active_pid, 0), coalesce(xmin::text, ''), coalesce(catalog_xmin::text, ''),
       coalesce(restart_lsn::text, ''), coalesce(confirmed_flush_lsn::text, ''), coalesce(wal_status, ''), safe_wal_size
FROM pg_catalog.pg_replication_slots ORDER BY slot_name`)
	if err != nil {
		return nil, fmt.Errorf("reading pg_replication_slots: %w; the -pg role needs to read it (pg_monitor)", err)
	}
	for rows.Next() {
		var r SlotRow
		var restart, confirmed string
		if err := rows.Scan(&r.Name, &r.Type, &r.Plugin, &r.Database, &r.Active, &r.ActivePID, &r.Xmin, &r.CatalogXmin,
			&restart, &confirmed, &r.WALStatus, &r.SafeWALSize); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading pg_replication_slots: %w", err)
		}
		if restart != "" {
			r.RestartLSN, _ = ledger.ParseLSN(restart)
		}
		if confirmed != "" {
			r.ConfirmedFlush, _ = ledger.ParseLSN(confirmed)
		}
		if r.RestartLSN != 0 && st.WALEnd > r.RestartLSN {
			r.RetainedBytes = int64(st.WALEnd - r.RestartLSN)
		}
		if r.Name == slot {
			st.Slot = &r
		} else {
			st.Others = append(st.Others, r)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading pg_replication_slots: %w", err)
	}
	// Only a transaction with an xid holds a logical slot's restart_lsn
	// (decoding must see it from its start); a prepared one counts too.
	var x Xact
	err = conn.QueryRow(ctx, `
SELECT pid, coalesce(datname::text, ''), coalesce(usename::text, ''), coalesce(state, ''),
       coalesce(backend_xid::text, ''), coalesce(backend_xmin::text, ''), xact_start,
       extract(epoch FROM now() - xact_start)::float8, left(coalesce(query, ''), 200), coalesce(backend_type, '')
FROM pg_catalog.pg_stat_activity
WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL
ORDER BY xact_start LIMIT 1`).Scan(&x.PID, &x.Database, &x.User, &x.State, &x.Xid, &x.Xmin, &x.Start, &x.AgeSeconds, &x.Query, &x.BackendType)
	switch {
	case err == nil:
		x.Start = x.Start.UTC()
		st.OldestXact = &x
	case errors.Is(err, pgx.ErrNoRows):
	default:
		st.Notes = append(st.Notes, "oldest transaction unknown: "+err.Error())
	}
	var px Xact
	err = conn.QueryRow(ctx, `
SELECT gid, coalesce(database::text, ''), coalesce(owner::text, ''), transaction::text, prepared,
       extract(epoch FROM now() - prepared)::float8
FROM pg_catalog.pg_prepared_xacts ORDER BY prepared LIMIT 1`).Scan(&px.GID, &px.Database, &px.User, &px.Xid, &px.Start, &px.AgeSeconds)
	switch {
	case err == nil:
		px.Start, px.State = px.Start.UTC(), "prepared"
		if st.OldestXact == nil || px.Start.Before(st.OldestXact.Start) {
			st.OldestXact = &px
		}
	case errors.Is(err, pgx.ErrNoRows):
	default:
		st.Notes = append(st.Notes, "prepared transactions unknown: "+err.Error())
	}
	return st, nil
}

// oldestSlot returns the slot (ours or another) with the oldest restart_lsn:
// the one that decides how much WAL slots keep.
func (p *PGState) oldestSlot() *SlotRow {
	var best *SlotRow
	consider := func(r *SlotRow) {
		if r.RestartLSN == 0 {
			return
		}
		if best == nil || r.RestartLSN < best.RestartLSN {
			best = r
		}
	}
	if p.Slot != nil {
		consider(p.Slot)
	}
	for i := range p.Others {
		consider(&p.Others[i])
	}
	return best
}
