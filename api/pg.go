package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerd/ledgerd/ledger"
)

// PG answers the API's questions to Postgres over a small connection pool
// (not the replication connection). It implements TableChecker and
// SlotReader.
type PG struct {
	pool        *pgxpool.Pool
	slot        string
	publication string
}

// NewPG connects a pool of at most two connections to connString.
func NewPG(ctx context.Context, connString, slot, publication string) (*PG, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("parsing the Postgres connection string: %w", err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to Postgres: %w", err)
	}
	return &PG{pool: pool, slot: slot, publication: publication}, nil
}

// Close closes the pool.
func (p *PG) Close() { p.pool.Close() }

// CheckTable returns an error wrapping ErrUnknownTable when table
// ("schema.table") is not a table of the database, or when the publication
// exists and does not publish it: a shape on it would never get a change.
func (p *PG) CheckTable(ctx context.Context, table string) error {
	schema, name, ok := strings.Cut(table, ".")
	if !ok || schema == "" || name == "" {
		return fmt.Errorf("%w: %q is not of the form schema.table", ErrUnknownTable, table)
	}
	var exists, pubExists, published bool
	err := p.pool.QueryRow(ctx, `
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')),
       EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $3),
       EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables WHERE pubname = $3 AND schemaname = $1 AND tablename = $2)`,
		schema, name, p.publication).Scan(&exists, &pubExists, &published)
	if err != nil {
		return fmt.Errorf("looking up table %s: %w", table, err)
	}
	if !exists {
		return fmt.Errorf("%w: table %s does not exist in the database; create it first or fix the name (schema.table, case-sensitive)", ErrUnknownTable, table)
	}
	if pubExists && !published {
		return fmt.Errorf("%w: table %s is not in publication %s; ALTER PUBLICATION %s ADD TABLE %s", ErrUnknownTable, table, p.publication, p.publication, table)
	}
	return nil
}

// ResolveTable implements TableResolver: what CheckTable checks, then the
// table's relation OID, its columns, and the position the answer holds from
// (the WAL insert position, read in the same statement as the catalog:
// every catalog change the answer reflects committed before it). It is one
// query, since a batch of shapes resolves each of its tables.
func (p *PG) ResolveTable(ctx context.Context, table string, columns []string) (uint32, ledger.LSN, error) {
	schema, name, ok := strings.Cut(table, ".")
	if !ok || schema == "" || name == "" {
		return 0, 0, fmt.Errorf("%w: %q is not of the form schema.table", ErrUnknownTable, table)
	}
	var (
		relID                uint32
		at                   string
		have                 []string
		pubExists, published bool
		pubColumns           []string
	)
	// A publication with a column list (Postgres 15+) sends only those
	// columns: a filter column left out would look dropped in the stream.
	// to_jsonb reads attnames where it exists and gives null before 15.
	err := p.pool.QueryRow(ctx, `
SELECT c.oid,
       (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END)::text,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $3),
       pt.pubname IS NOT NULL,
       to_jsonb(pt) -> 'attnames'
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_publication_tables pt ON pt.pubname = $3 AND pt.schemaname = n.nspname AND pt.tablename = c.relname
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, schema, name, p.publication).
		Scan(&relID, &at, &have, &pubExists, &published, &pubColumns)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, fmt.Errorf("%w: table %s does not exist in the database; create it first or fix the name (schema.table, case-sensitive)", ErrUnknownTable, table)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("resolving table %s: %w", table, err)
	}
	if pubExists && !published {
		return 0, 0, fmt.Errorf("%w: table %s is not in publication %s; ALTER PUBLICATION %s ADD TABLE %s", ErrUnknownTable, table, p.publication, p.publication, table)
	}
	var missing []string
	for _, col := range columns {
		if !slices.Contains(have, col) {
			missing = append(missing, col)
		}
	}
	if len(missing) > 0 {
		return 0, 0, fmt.Errorf("%w: table %s has no column %s; filter on its columns (%s), case-sensitive, or add the column first",
			ErrUnknownColumn, table, strings.Join(missing, ", "), strings.Join(have, ", "))
	}
	if pubColumns != nil {
		for _, col := range columns {
			if !slices.Contains(pubColumns, col) {
				missing = append(missing, col)
			}
		}
		if len(missing) > 0 {
			return 0, 0, fmt.Errorf("%w: column %s of table %s is not in the column list of publication %s (%s); filter on a published column or add it to the publication",
				ErrUnknownColumn, strings.Join(missing, ", "), table, p.publication, strings.Join(pubColumns, ", "))
		}
	}
	lsn, err := ledger.ParseLSN(at)
	if err != nil {
		return 0, 0, fmt.Errorf("resolving table %s: WAL position %q: %w", table, at, err)
	}
	return relID, lsn, nil
}

// SlotStatus reads the slot's row of pg_replication_slots and the server's
// WAL end.
func (p *PG) SlotStatus(ctx context.Context) (SlotStatus, error) {
	var (
		st                         SlotStatus
		confirmed, restart, walEnd *string
		walStatus                  *string
		pid                        *int32
	)
	err := p.pool.QueryRow(ctx, `
SELECT confirmed_flush_lsn::text, restart_lsn::text, pg_current_wal_lsn()::text, wal_status, active, active_pid
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, p.slot).Scan(&confirmed, &restart, &walEnd, &walStatus, &st.Active, &pid)
	if err != nil {
		return st, fmt.Errorf("reading slot %s from pg_replication_slots: %w", p.slot, err)
	}
	parse := func(s *string) ledger.LSN {
		if s == nil {
			return 0
		}
		l, _ := ledger.ParseLSN(*s)
		return l
	}
	st.ConfirmedFlush, st.RestartLSN, st.WALEnd = parse(confirmed), parse(restart), parse(walEnd)
	if walStatus != nil {
		st.WALStatus = *walStatus
	}
	if pid != nil {
		st.ActivePID = int(*pid)
	}
	if st.WALEnd > st.RestartLSN && st.RestartLSN != 0 {
		st.RetainedBytes = int64(st.WALEnd - st.RestartLSN)
	}
	return st, nil
}
