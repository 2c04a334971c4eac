package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/internal/replident"
	"github.com/ledgerd/ledgerd/ledger"
)

// readKeyOnly reads, with -pg, the replica identity of the tables the
// ledger's shapes filter, and returns those whose deletes lack a filter
// column (replica identity not FULL): their deletes reach the shapes
// unfiltered.
func readKeyOnly(ctx context.Context, connString string, shapes []ledger.Shape) ([]wire.KeyOnlyTable, error) {
	tables := replident.FilteredTables(shapes)
	out := []wire.KeyOnlyTable{}
	if len(tables) == 0 {
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return nil, fmt.Errorf("connecting to Postgres (-pg): %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ids, err := replident.Read(ctx, conn, tables)
	if err != nil {
		return nil, err
	}
	for _, g := range replident.Gaps(ids, shapes) {
		out = append(out, wire.KeyOnlyTable{Table: g.Table, ReplicaIdentity: g.Mode, Columns: g.Columns, Shapes: g.Shapes})
	}
	return out, nil
}

// keyOnlyStatus fills the status' key-only tables from Postgres (-pg) or
// else the daemon, saying which; with neither it notes how to find out.
func keyOnlyStatus(src *Source, live *wire.Status, rep *StatusReport) {
	if len(replident.FilteredTables(src.State.Shapes)) == 0 {
		return
	}
	switch {
	case src.PG != nil && src.KeyOnlyErr == "":
		rep.KeyOnlyTables, rep.KeyOnlyFrom = src.KeyOnly, fromPG
	case live != nil && live.KeyOnlyTables != nil:
		rep.KeyOnlyTables, rep.KeyOnlyFrom = live.KeyOnlyTables, fromDaemon
	case src.KeyOnlyErr != "":
		rep.Notes = append(rep.Notes, "replica identities unknown: "+src.KeyOnlyErr)
	default:
		rep.Notes = append(rep.Notes, "whether deletes reach filtered shapes unfiltered depends on the tables' replica identity: give -pg")
	}
}
