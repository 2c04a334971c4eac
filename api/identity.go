package api

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/internal/replident"
)

// IdentityManager reads, and may set, the replica identity of tables that
// shapes filter. Under replica identity DEFAULT or USING INDEX a delete
// carries only the key, so a shape filtered on another column receives every
// delete of its table (over-delivery, never a miss: I1).
type IdentityManager interface {
	// ReplicaIdentity returns the identity of each of tables that exists.
	ReplicaIdentity(ctx context.Context, tables []string) (map[string]replident.Identity, error)
	// SetReplicaIdentityFull runs ALTER TABLE table REPLICA IDENTITY FULL.
	SetReplicaIdentityFull(ctx context.Context, table string) error
}

// ReplicaIdentity implements IdentityManager.
func (p *PG) ReplicaIdentity(ctx context.Context, tables []string) (map[string]replident.Identity, error) {
	return replident.Read(ctx, p.pool, tables)
}

// SetReplicaIdentityFull implements IdentityManager.
func (p *PG) SetReplicaIdentityFull(ctx context.Context, table string) error {
	return replident.SetFull(ctx, p.pool, table, replident.DefaultLockTimeout)
}

// checkIdentity looks at the replica identity of a shape's table when the
// shape filters on columns a delete may not carry. With
// Config.SetIdentityFull it makes the table's replica identity FULL (the
// first shape filtering it on a non-key column does so; later ones find it
// FULL), and if that fails, as it does without the table's ownership, it
// logs why and falls back to the warning. It returns the warnings for the
// PUT answer; it never fails the call, since over-delivery loses nothing.
func (s *Server) checkIdentity(ctx context.Context, table string, filter map[string][]string) []string {
	return s.identityChecker(ctx).check(table, filter)
}

// identityChecker is checkIdentity for the shapes of one call: each table's
// replica identity is read, and set, at most once.
type identityChecker struct {
	s      *Server
	ctx    context.Context
	ids    map[string]replident.Identity
	errs   map[string]error
	failed map[string]string // tables whose identity could not be set FULL: why
}

func (s *Server) identityChecker(ctx context.Context) *identityChecker {
	return &identityChecker{s: s, ctx: ctx, ids: map[string]replident.Identity{}, errs: map[string]error{}, failed: map[string]string{}}
}

// prefetch reads the replica identity of tables in one query, for the
// shapes of a call that filter them.
func (c *identityChecker) prefetch(tables []string) {
	if c.s.cfg.Identity == nil || len(tables) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	ids, err := c.s.cfg.Identity.ReplicaIdentity(ctx, tables)
	cancel()
	if err != nil {
		return // check reads them one by one and reports why
	}
	for _, t := range tables {
		c.errs[t] = nil
		if id, ok := ids[t]; ok {
			c.ids[t] = id
		}
	}
}

func (c *identityChecker) check(table string, filter map[string][]string) []string {
	s := c.s
	if s.cfg.Identity == nil || len(filter) == 0 {
		return nil
	}
	id, ok := c.ids[table]
	err, read := c.errs[table]
	if !ok && !read {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		var ids map[string]replident.Identity
		ids, err = s.cfg.Identity.ReplicaIdentity(ctx, []string{table})
		cancel()
		c.errs[table] = err
		if id, ok = ids[table]; ok {
			c.ids[table] = id
		}
	}
	if err != nil {
		if !read {
			s.log.Warn().Err(err).Str("table", table).Msg("reading the replica identity of a filtered table")
		}
		return []string{fmt.Sprintf("could not read the replica identity of %s (%v): unless it is FULL, its deletes reach this shape unfiltered", table, err)}
	}
	if !ok {
		return nil
	}
	missing := id.Missing(filter)
	if len(missing) == 0 {
		return nil
	}
	failed, tried := c.failed[table]
	if s.cfg.SetIdentityFull && !tried {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		err := s.cfg.Identity.SetReplicaIdentityFull(ctx, table)
		cancel()
		if err == nil {
			s.log.Info().Str("table", table).Str("was", id.Mode).Strs("filter_columns", missing).
				Msg("set replica identity full: deletes now carry the columns shapes filter on")
			c.ids[table] = replident.Identity{Mode: replident.ModeFull}
			return nil
		}
		s.log.Warn().Err(err).Str("table", table).Strs("filter_columns", missing).
			Msg("could not set replica identity full; deletes of the table reach its filtered shapes unfiltered")
		failed = fmt.Sprintf(" (-replica-identity full could not set it: %v)", err)
		c.failed[table] = failed
	}
	key := "no column"
	if len(id.Key) > 0 {
		key = "only " + strings.Join(id.Key, ", ")
	}
	fix := "start ledgerd with -replica-identity full"
	if failed != "" {
		fix = "have the table's owner run it"
	}
	return []string{fmt.Sprintf("table %s has replica identity %s%s: its deletes and key-changing updates carry %s, not filter column %s, "+
		"so they reach this shape unfiltered (over-delivery), and an update that moves a row out of the filter does not reach it; "+
		"ALTER TABLE %s REPLICA IDENTITY FULL, or %s", table, id.Mode, failed, key, strings.Join(missing, ", "), table, fix)}
}

// keyOnlyTables fills the status' list of tables whose shapes filter on
// columns their deletes lack. It reads the ledger's per-relation counts, not
// the shapes: a million shapes cost what a few relations do.
func (s *Server) keyOnlyTables(ctx context.Context, st *wire.Status) {
	if s.cfg.Identity == nil {
		return
	}
	uses := s.l.Relations()
	tables := replident.FilteredTablesOf(uses)
	st.KeyOnlyTables = []wire.KeyOnlyTable{}
	if len(tables) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids, err := s.cfg.Identity.ReplicaIdentity(ctx, tables)
	if err != nil {
		st.KeyOnlyTables, st.KeyOnlyError = nil, err.Error()
		return
	}
	for _, g := range replident.GapsOf(ids, uses) {
		st.KeyOnlyTables = append(st.KeyOnlyTables, wire.KeyOnlyTable{Table: g.Table, ReplicaIdentity: g.Mode, Columns: g.Columns, Shapes: g.Shapes})
	}
}

// SetIdentitiesFull does, with Config.SetIdentityFull, what a PUT would
// have done for every live shape: it sets REPLICA IDENTITY FULL on each
// table that shapes filter on columns outside its key. It covers shapes
// created before the flag was given, and it is idempotent (a FULL table is
// left alone). It logs what it did and what it could not do; it never
// stops the daemon, since over-delivery loses nothing.
func (s *Server) SetIdentitiesFull(ctx context.Context) {
	if s.cfg.Identity == nil || !s.cfg.SetIdentityFull {
		return
	}
	uses := s.l.Relations()
	tables := replident.FilteredTablesOf(uses)
	if len(tables) == 0 {
		return
	}
	ids, err := s.cfg.Identity.ReplicaIdentity(ctx, tables)
	if err != nil {
		s.log.Warn().Err(err).Msg("reading the replica identity of filtered tables at start-up")
		return
	}
	for _, g := range replident.GapsOf(ids, uses) {
		if err := s.cfg.Identity.SetReplicaIdentityFull(ctx, g.Table); err != nil {
			s.log.Warn().Err(err).Str("table", g.Table).Strs("filter_columns", g.Columns).Int("shapes", g.Shapes).
				Msg("could not set replica identity full; deletes of the table reach its filtered shapes unfiltered")
			continue
		}
		s.log.Info().Str("table", g.Table).Str("was", g.Mode).Strs("filter_columns", g.Columns).Int("shapes", g.Shapes).
			Msg("set replica identity full: deletes now carry the columns shapes filter on")
	}
}
