package replident

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/ledger"
)

// Replica identity modes, as ALTER TABLE ... REPLICA IDENTITY names them.
const (
	ModeDefault = "default" // the primary key (none: no old row at all)
	ModeIndex   = "index"   // the columns of a unique index
	ModeFull    = "full"    // the whole row
	ModeNothing = "nothing" // no old row
)

// DefaultLockTimeout bounds how long SetFull waits for the table's lock:
// ALTER TABLE needs an ACCESS EXCLUSIVE lock, and waiting behind a long
// transaction would block every reader and writer of the table queued
// behind it.
const DefaultLockTimeout = 5 * time.Second

// Identity is a table's replica identity.
type Identity struct {
	Table string   `json:"table"` // "schema.table"
	Mode  string   `json:"mode"`  // ModeDefault, ModeIndex, ModeFull or ModeNothing
	Key   []string `json:"key"`   // the columns a key-only old row carries, sorted; empty for nothing, unused for full
}

// Missing returns, sorted, the filter columns that the old row of a delete
// (or of a key-changing update) lacks under this identity: nil under FULL.
// A shape filtered on one of them receives every such change of the table.
func (id Identity) Missing(filter map[string][]string) []string {
	if id.Mode == ModeFull {
		return nil
	}
	var out []string
	for col := range filter {
		if !slices.Contains(id.Key, col) {
			out = append(out, col)
		}
	}
	slices.Sort(out)
	return out
}

// Querier runs a query; *pgx.Conn and *pgxpool.Pool are Queriers.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Read returns the replica identity of each of tables ("schema.table") that
// exists as a table; the others are left out of the map.
func Read(ctx context.Context, q Querier, tables []string) (map[string]Identity, error) {
	out := map[string]Identity{}
	if len(tables) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, `
SELECT n.nspname || '.' || c.relname, c.relreplident::text,
       array(SELECT a.attname::text
             FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
             WHERE i.indrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND CASE c.relreplident WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END
             ORDER BY a.attname)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY ($1::text[])`, tables)
	if err != nil {
		return nil, fmt.Errorf("reading replica identities: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id   Identity
			mode string
		)
		if err := rows.Scan(&id.Table, &mode, &id.Key); err != nil {
			return nil, fmt.Errorf("reading replica identities: %w", err)
		}
		id.Mode = map[string]string{"d": ModeDefault, "i": ModeIndex, "f": ModeFull, "n": ModeNothing}[mode]
		out[id.Table] = id
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading replica identities: %w", err)
	}
	return out, nil
}

// Beginner starts a transaction; *pgx.Conn and *pgxpool.Pool are Beginners.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// SetFull runs ALTER TABLE table REPLICA IDENTITY FULL, waiting at most
// lockTimeout (DefaultLockTimeout when zero) for the table's lock. It needs
// the table's ownership; Postgres' error says so when the role lacks it.
func SetFull(ctx context.Context, db Beginner, table string, lockTimeout time.Duration) error {
	schema, name, ok := strings.Cut(table, ".")
	if !ok || schema == "" || name == "" {
		return fmt.Errorf("setting replica identity full: %q is not of the form schema.table", table)
	}
	if lockTimeout <= 0 {
		lockTimeout = DefaultLockTimeout
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("setting replica identity full on %s: %w", table, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", lockTimeout.Milliseconds())); err != nil {
		return fmt.Errorf("setting replica identity full on %s: %w", table, err)
	}
	if _, err := tx.Exec(ctx, "ALTER TABLE "+pgx.Identifier{schema, name}.Sanitize()+" REPLICA IDENTITY FULL"); err != nil {
		return fmt.Errorf("setting replica identity full on %s: %w", table, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("setting replica identity full on %s: %w", table, err)
	}
	return nil
}

// Gap is a table whose shapes filter on columns that the old row of its
// deletes lacks: those deletes (and key-changing updates) reach the shapes
// unfiltered, and an update moving a row out of such a filter does not
// reach the shape it leaves.
type Gap struct {
	Table   string   `json:"table"`
	Mode    string   `json:"replica_identity"` // ModeDefault, ModeIndex or ModeNothing
	Columns []string `json:"columns"`          // filter columns outside the key, sorted
	Shapes  int      `json:"shapes"`           // shapes filtering on one of them
}

// FilteredTables returns, sorted, the tables that shapes filter.
func FilteredTables(shapes []ledger.Shape) []string {
	seen := map[string]bool{}
	var out []string
	for _, sh := range shapes {
		if len(sh.Filter) > 0 && !seen[sh.Table] {
			seen[sh.Table] = true
			out = append(out, sh.Table)
		}
	}
	slices.Sort(out)
	return out
}

// Gaps returns, sorted by table, the tables of ids whose shapes filter on
// columns the identity's old row lacks. Tables missing from ids (dropped)
// are left out.
func Gaps(ids map[string]Identity, shapes []ledger.Shape) []Gap {
	gs := gapSet{}
	for _, sh := range shapes {
		if id, ok := ids[sh.Table]; ok {
			gs.add(sh.Table, id, sh.Filter, 1)
		}
	}
	return gs.sorted()
}

// gapSet gathers Gaps by table, from shapes or from counts of them.
type gapSet map[string]*Gap

// add counts n shapes of table filtering on filter's columns, if the
// identity's old row lacks some of them.
func (gs gapSet) add(table string, id Identity, filter map[string][]string, n int) {
	missing := id.Missing(filter)
	if len(missing) == 0 {
		return
	}
	g := gs[table]
	if g == nil {
		g = &Gap{Table: table, Mode: id.Mode}
		gs[table] = g
	}
	g.Shapes += n
	for _, c := range missing {
		if !slices.Contains(g.Columns, c) {
			g.Columns = append(g.Columns, c)
		}
	}
}

func (gs gapSet) sorted() []Gap {
	out := make([]Gap, 0, len(gs))
	for _, g := range gs {
		slices.Sort(g.Columns)
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b Gap) int { return strings.Compare(a.Table, b.Table) })
	return out
}

// FilteredTablesOf is FilteredTables from the ledger's per-relation counts:
// it costs one look at each relation, whatever the number of shapes.
func FilteredTablesOf(uses []ledger.RelationUse) []string {
	var out []string
	for _, u := range uses {
		if len(u.Filters) > 0 && !slices.Contains(out, u.Table) {
			out = append(out, u.Table)
		}
	}
	slices.Sort(out)
	return out
}

// GapsOf is Gaps from the ledger's per-relation counts of shapes by filter
// columns: it judges each distinct column set once, whatever the number of
// shapes or of distinct filter values.
func GapsOf(ids map[string]Identity, uses []ledger.RelationUse) []Gap {
	gs := gapSet{}
	for _, u := range uses {
		id, ok := ids[u.Table]
		if !ok {
			continue
		}
		for _, f := range u.Filters {
			cols := make(map[string][]string, len(f.Columns))
			for _, c := range f.Columns {
				cols[c] = nil
			}
			gs.add(u.Table, id, cols, f.Shapes)
		}
	}
	return gs.sorted()
}
