package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledgerd/ledgerd/ledger"
)

// System is what IDENTIFY_SYSTEM reports: the identity a ledger file is
// bound to.
type System struct {
	SystemID string
	Timeline int32
	Database string
	XLogPos  ledger.LSN // current WAL flush position of the server
	// ConfirmedFlush is the slot's confirmed_flush_lsn as Check found it:
	// where the stream resumes (0 when the slot reports none).
	ConfirmedFlush ledger.LSN
}

// slotState is the slot's row in pg_replication_slots.
type slotState struct {
	confirmedFlush ledger.LSN
	missing        bool // not created yet (preflight with deferSlot)
}

// connect opens a replication connection (replication=database) to the
// configured database. A role without REPLICATION is refused by Postgres at
// this point; that refusal becomes ErrPrivilege.
func (s *Stream) connect(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(s.cfg.ConnString)
	if err != nil {
		return nil, &CheckError{Err: ErrConfig, Detail: err.Error(), Fix: "pass a valid Postgres connection string", Terminal: true}
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "ledgerd"
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// Outside the runtime's poller (blockConn), with raw reads and
		// writes as internal/rawsock makes them: a backlog's packets do not
		// wake an idle thread while the stream is not reading.
		cc := newCoalescingConn(newBlockConn(c))
		cc.unix = network == "unix"
		if b, ok := s.h.(Batcher); ok {
			cc.idle = b.EndBatch
		}
		return cc, nil
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		if pgCode(err) == "28P01" {
			// Retrying a refused password cannot succeed; it only fills the
			// server's log (and may lock the role out).
			return nil, &CheckError{Err: ErrPassword, Detail: err.Error(),
				Fix: fmt.Sprintf("correct the password of role %s in -pg-url (or in PGPASSWORD or ~/.pgpass), or the role's password in Postgres (ALTER ROLE %s PASSWORD ...)",
					quoteIdent(cfg.User), quoteIdent(cfg.User)), Terminal: true}
		}
		if code := pgCode(err); code == "28000" && strings.Contains(pgMessage(err), "does not exist") {
			// No such role: no retry can log in until someone creates it.
			return nil, &CheckError{Err: ErrRoleMissing, Detail: err.Error(),
				Fix: fmt.Sprintf("create the role (CREATE ROLE %s LOGIN REPLICATION) or correct the user in -pg-url", quoteIdent(cfg.User)), Terminal: true}
		}
		if pgCode(err) == "3D000" {
			// No such database: the server is up and says so; retrying
			// cannot create it.
			return nil, &CheckError{Err: ErrDatabaseMissing, Detail: err.Error(),
				Fix: fmt.Sprintf("create the database (CREATE DATABASE %s) or correct the database name in -pg-url", quoteIdent(cfg.Database)), Terminal: true}
		}
		if code := pgCode(err); code == "42501" || code == "28000" {
			return nil, &CheckError{Err: ErrPrivilege, Detail: err.Error(),
				Fix: fmt.Sprintf("ALTER ROLE %s REPLICATION (and allow replication connections in pg_hba.conf)", quoteIdent(cfg.User)), Terminal: true}
		}
		return nil, fmt.Errorf("connecting for replication: %w", err)
	}
	return conn, nil
}

// Check connects, runs IDENTIFY_SYSTEM and the preflight checks (wal_level,
// privileges, publication, slot), creating the slot and publication only when
// the Config asks for it. Each failure is a *CheckError naming the fix.
func (s *Stream) Check(ctx context.Context) (System, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return System{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sys, slot, err := s.preflight(ctx, conn, true, false)
	sys.ConfirmedFlush = slot.confirmedFlush
	return sys, err
}

// preflight runs the checks on a replication connection. create allows
// creating a missing slot or publication (when configured): only the first
// session may do so, so that a slot dropped while running is reported rather
// than silently recreated past lost transactions. deferSlot reports a missing
// slot that Config.CreateSlot allows creating as slotState.missing instead of
// creating it (Setup creates it once the ledger file is open).
func (s *Stream) preflight(ctx context.Context, conn *pgconn.PgConn, create, deferSlot bool) (System, slotState, error) {
	id, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return System{}, slotState{}, fmt.Errorf("identify system: %w", err)
	}
	sys := System{SystemID: id.SystemID, Timeline: id.Timeline, Database: id.DBName, XLogPos: ledger.LSN(id.XLogPos)}

	rows, err := query(ctx, conn, "SHOW wal_level")
	if err != nil {
		return sys, slotState{}, err
	}
	if len(rows) != 1 || rows[0][0] != "logical" {
		got := "?"
		if len(rows) == 1 {
			got = rows[0][0]
		}
		return sys, slotState{}, &CheckError{Err: ErrWALLevel, Detail: "wal_level is " + got,
			Fix: "set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart Postgres", Terminal: true}
	}

	rows, err = query(ctx, conn, "SELECT current_user, (rolsuper OR rolreplication)::text FROM pg_roles WHERE rolname = current_user")
	if err != nil {
		return sys, slotState{}, err
	}
	if len(rows) != 1 || rows[0][1] != "true" {
		user := "?"
		if len(rows) == 1 {
			user = rows[0][0]
		}
		return sys, slotState{}, &CheckError{Err: ErrPrivilege, Detail: "role " + user + " has neither REPLICATION nor SUPERUSER",
			Fix: "ALTER ROLE " + quoteIdent(user) + " REPLICATION", Terminal: true}
	}

	if err := s.checkPublication(ctx, conn, create); err != nil {
		return sys, slotState{}, err
	}
	slot, err := s.checkSlot(ctx, conn, sys.Database, create, deferSlot)
	return sys, slot, err
}

func (s *Stream) checkPublication(ctx context.Context, conn *pgconn.PgConn, create bool) error {
	pub := s.cfg.Publication
	rows, err := query(ctx, conn, "SELECT 1 FROM pg_publication WHERE pubname = "+quoteLiteral(pub))
	if err != nil {
		return err
	}
	if len(rows) == 1 {
		return nil
	}
	if !create || s.cfg.CreatePublication == "" {
		return &CheckError{Err: ErrPublicationMissing, Detail: fmt.Sprintf("publication %q", pub),
			Fix: fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE ... (or FOR ALL TABLES), or run with -create-publication all|schema.table,...", quoteIdent(pub)), Terminal: true}
	}
	sql := "CREATE PUBLICATION " + quoteIdent(pub)
	if strings.EqualFold(s.cfg.CreatePublication, "all") {
		sql += " FOR ALL TABLES"
	} else {
		var tables []string
		for _, t := range strings.Split(s.cfg.CreatePublication, ",") {
			if t = strings.TrimSpace(t); t != "" {
				tables = append(tables, quoteQualified(t))
			}
		}
		sql += " FOR TABLE " + strings.Join(tables, ", ")
	}
	if _, err := query(ctx, conn, sql); err != nil {
		if pgCode(err) == "42501" {
			return &CheckError{Err: ErrPrivilege, Detail: "creating publication: " + err.Error(),
				Fix: "create the publication as the tables' owner (FOR ALL TABLES needs a superuser), or grant this role ownership", Terminal: true}
		}
		return fmt.Errorf("creating publication %q: %w", pub, err)
	}
	s.log.Info().Str("publication", pub).Str("tables", s.cfg.CreatePublication).Msg("created publication")
	return nil
}

func (s *Stream) checkSlot(ctx context.Context, conn *pgconn.PgConn, db string, create, deferSlot bool) (slotState, error) {
	slot := s.cfg.Slot
	const cols = "SELECT coalesce(plugin, ''), slot_type, coalesce(database, ''), active::text, coalesce(active_pid::text, ''), coalesce(wal_status, ''), coalesce(confirmed_flush_lsn::text, '') FROM pg_replication_slots WHERE slot_name = "
	rows, err := query(ctx, conn, cols+quoteLiteral(slot))
	if err != nil {
		return slotState{}, err
	}
	if len(rows) == 0 {
		if !create || !s.cfg.CreateSlot {
			return slotState{}, &CheckError{Err: ErrSlotMissing, Detail: fmt.Sprintf("slot %q", slot),
				Fix: fmt.Sprintf("run with -create-slot, or SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", quoteLiteral(slot)), Terminal: true}
		}
		if deferSlot {
			return slotState{missing: true}, nil
		}
		if _, err := s.createSlot(ctx, conn); err != nil {
			return slotState{}, err
		}
		if rows, err = query(ctx, conn, cols+quoteLiteral(slot)); err != nil {
			return slotState{}, err
		}
		if len(rows) == 0 {
			return slotState{}, fmt.Errorf("slot %q vanished right after it was created", slot)
		}
	}
	plugin, typ, slotDB, active, pid, walStatus, confirmed := rows[0][0], rows[0][1], rows[0][2], rows[0][3], rows[0][4], rows[0][5], rows[0][6]
	if typ != "logical" || plugin != "pgoutput" {
		return slotState{}, &CheckError{Err: ErrSlotPlugin, Detail: fmt.Sprintf("slot %q is %s with plugin %q", slot, typ, plugin),
			Fix: "use another -slot, or drop this one and run with -create-slot", Terminal: true}
	}
	if slotDB != db {
		return slotState{}, &CheckError{Err: ErrSlotDatabase, Detail: fmt.Sprintf("slot %q is in database %q, connected to %q", slot, slotDB, db),
			Fix: "connect -pg-url to database " + slotDB + ", or use another -slot", Terminal: true}
	}
	if walStatus == "lost" {
		return slotState{}, &CheckError{Err: ErrSlotInvalidated, Detail: fmt.Sprintf("slot %q has wal_status lost", slot),
			Fix: fmt.Sprintf("the WAL it needed is gone: SELECT pg_drop_replication_slot(%s), run with -create-slot -adopt-slot and resynchronise every consumer; raise max_slot_wal_keep_size to avoid it", quoteLiteral(slot)), Terminal: true}
	}
	if active == "true" && pid != fmt.Sprint(conn.PID()) {
		return slotState{}, &CheckError{Err: ErrSlotActive, Detail: fmt.Sprintf("slot %q is active in pid %s", slot, pid),
			Fix: "stop the other reader of the slot (SELECT pg_terminate_backend(" + pid + ")) or use another -slot"}
	}
	var st slotState
	if confirmed != "" {
		if st.confirmedFlush, err = ledger.ParseLSN(confirmed); err != nil {
			return slotState{}, fmt.Errorf("slot %q: %w", slot, err)
		}
	}
	return st, nil
}

// createSlot creates the slot and returns its consistent point.
func (s *Stream) createSlot(ctx context.Context, conn *pgconn.PgConn) (ledger.LSN, error) {
	slot := s.cfg.Slot
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication})
	if err != nil {
		if pgCode(err) == "42501" {
			return 0, &CheckError{Err: ErrPrivilege, Detail: "creating slot: " + err.Error(), Fix: "ALTER ROLE ... REPLICATION", Terminal: true}
		}
		return 0, fmt.Errorf("creating slot %q: %w", slot, err)
	}
	at, err := ledger.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, fmt.Errorf("slot %q created with consistent point %q: %w", slot, res.ConsistentPoint, err)
	}
	s.log.Info().Stringer("consistent_point", at).Msg("created replication slot")
	return at, nil
}

// query runs sql with the simple protocol (the only one a replication
// connection speaks) and returns the rows as text.
func query(ctx context.Context, conn *pgconn.PgConn, sql string) ([][]string, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sql, err)
	}
	var rows [][]string
	for _, r := range results {
		if r.Err != nil {
			return nil, fmt.Errorf("%s: %w", sql, r.Err)
		}
		for _, row := range r.Rows {
			vals := make([]string, len(row))
			for i, v := range row {
				vals[i] = string(v)
			}
			rows = append(rows, vals)
		}
	}
	return rows, nil
}

// pgMessage returns the message of a Postgres error in err, or "".
func pgMessage(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Message
	}
	return ""
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// quoteQualified quotes "schema.table" (or "table") part by part.
func quoteQualified(s string) string {
	schema, table, ok := strings.Cut(s, ".")
	if !ok {
		return quoteIdent(s)
	}
	return quoteIdent(schema) + "." + quoteIdent(table)
}
