package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/reconcile"
)

// catalog implements reconcile.Catalog over the reconciler's pool: one
// query a pass for every distinct table that has shapes.
type catalog struct{ pool *pgxpool.Pool }

// catalogTimeout bounds one catalog read.
const catalogTimeout = 5 * time.Second

func (c catalog) Relations(ctx context.Context, ids []uint32) (map[uint32]reconcile.Relation, error) {
	ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	rows, err := c.pool.Query(ctx, `
SELECT c.oid, n.nspname || '.' || c.relname,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = ANY($1::oid[])`, ids)
	if err != nil {
		return nil, fmt.Errorf("reading relations: %w", err)
	}
	defer rows.Close()
	out := make(map[uint32]reconcile.Relation, len(ids))
	for rows.Next() {
		var id uint32
		var rel reconcile.Relation
		if err := rows.Scan(&id, &rel.Table, &rel.Columns); err != nil {
			return nil, fmt.Errorf("reading relations: %w", err)
		}
		out[id] = rel
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading relations: %w", err)
	}
	return out, nil
}

func (c catalog) ResolveTables(ctx context.Context, tables []string) (map[string]uint32, ledger.LSN, error) {
	ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	schemas := make([]string, len(tables))
	names := make([]string, len(tables))
	for i, t := range tables {
		schemas[i], names[i], _ = strings.Cut(t, ".")
	}
	rows, err := c.pool.Query(ctx, `
SELECT t.nsp || '.' || t.rel, c.oid
FROM unnest($1::text[], $2::text[]) AS t(nsp, rel)
JOIN pg_catalog.pg_namespace n ON n.nspname = t.nsp
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.rel AND c.relkind IN ('r', 'p')`, schemas, names)
	if err != nil {
		return nil, 0, fmt.Errorf("resolving tables: %w", err)
	}
	defer rows.Close()
	out := make(map[string]uint32, len(tables))
	for rows.Next() {
		var table string
		var id uint32
		if err := rows.Scan(&table, &id); err != nil {
			return nil, 0, fmt.Errorf("resolving tables: %w", err)
		}
		out[table] = id
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("resolving tables: %w", err)
	}
	// Read after the catalog: every change the answer reflects committed
	// before this position.
	var at string
	err = c.pool.QueryRow(ctx, `SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
ELSE pg_catalog.pg_current_wal_lsn() END)::text`).Scan(&at)
	if err != nil {
		return nil, 0, fmt.Errorf("reading the WAL position: %w", err)
	}
	lsn, err := ledger.ParseLSN(at)
	if err != nil {
		return nil, 0, fmt.Errorf("reading the WAL position %q: %w", at, err)
	}
	return out, lsn, nil
}
