package api

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

func (s *Server) putShape(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if e := validID("shape", id); e != nil && !s.knownShape(id) {
		writeError(w, e)
		return
	}
	var req wire.ShapeRequest
	if e := decode(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	p := &shapePut{id: id, consumer: req.Consumer, table: req.Table, filter: req.Filter}
	if p.consumer == "" || p.table == "" {
		writeError(w, errorf(http.StatusBadRequest, wire.CodeInvalid, `a shape needs "consumer" and "table" ("schema.table")`))
		return
	}
	if s.checkShapePut(p); p.err != nil {
		writeError(w, p.err)
		return
	}
	if e := s.checkLease(r, req.Consumer); e != nil {
		writeError(w, e)
		return
	}
	s.putShapes(r.Context(), []*shapePut{p})
	if p.err != nil {
		writeError(w, p.err)
		return
	}
	status := http.StatusOK
	if p.created {
		status = http.StatusCreated
		s.log.Info().Str("shape", id).Str("consumer", p.shape.Consumer).Str("table", p.table).Uint64("generation", p.shape.Generation).
			Stringer("start_lsn", p.shape.StartLSN).Msg("shape created")
	}
	writeJSON(w, status, wire.ShapeResponse{ID: p.shape.ID, Generation: p.shape.Generation, StartLSN: p.shape.StartLSN.String(), Warnings: p.warnings})
}

// maxShapesPerCall bounds one PUT /v1/consumers/{id}/shapes, as the body
// limit does: the ledger creates them in one bbolt transaction.
const maxShapesPerCall = 10000

// putConsumerShapes is PUT /v1/consumers/{id}/shapes: many shapes of one
// consumer in one call, each checked and answered as PUT /v1/shapes/{id}
// would answer it, created together in one durable commit.
func (s *Server) putConsumerShapes(w http.ResponseWriter, r *http.Request) {
	consumer := r.PathValue("id")
	var req wire.ShapesRequest
	if e := decode(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	if len(req.Shapes) == 0 {
		writeError(w, errorf(http.StatusBadRequest, wire.CodeInvalid, `the body lists no shapes; send {"shapes":[{"id":...,"table":...}]}`))
		return
	}
	if len(req.Shapes) > maxShapesPerCall {
		writeError(w, errorf(http.StatusBadRequest, wire.CodeInvalid,
			"the body lists %d shapes; one call takes at most %d: send fewer per call", len(req.Shapes), maxShapesPerCall))
		return
	}
	if e := s.checkLease(r, consumer); e != nil {
		writeError(w, e)
		return
	}
	ps := make([]*shapePut, len(req.Shapes))
	todo := make([]*shapePut, 0, len(ps))
	for i, it := range req.Shapes {
		p := &shapePut{id: it.ID, consumer: consumer, table: it.Table, filter: it.Filter}
		ps[i] = p
		switch {
		case validID("shape", p.id) != nil && !s.knownShape(p.id):
			p.err = validID("shape", p.id)
		case p.table == "":
			p.err = errorf(http.StatusBadRequest, wire.CodeInvalid, `shape %s needs "table" ("schema.table")`, clip(p.id))
		default:
			s.checkShapePut(p)
		}
		if p.err == nil {
			todo = append(todo, p)
		}
	}
	s.putShapes(r.Context(), todo)
	res := wire.ShapesResponse{Shapes: make([]wire.ShapeResult, len(ps))}
	created := 0
	for i, p := range ps {
		out := wire.ShapeResult{ID: p.id, Warnings: p.warnings}
		switch {
		case p.err != nil:
			out.Status = p.err.status
			out.Error = &wire.Error{Code: p.err.code, Message: p.err.message, Reason: p.err.reason}
			out.Warnings = nil
		case p.created:
			out.Status = http.StatusCreated
			created++
		default:
			out.Status = http.StatusOK
		}
		if p.err == nil {
			out.Generation, out.StartLSN = p.shape.Generation, p.shape.StartLSN.String()
		}
		res.Shapes[i] = out
	}
	if created > 0 {
		s.log.Info().Str("consumer", consumer).Int("shapes", len(ps)).Int("created", created).Msg("shapes created")
	}
	writeJSON(w, http.StatusOK, res)
}

// shapePut is one shape of a PUT, alone or in a batch, as it goes through
// the checks both share; err is its answer when it is refused.
type shapePut struct {
	id, consumer, table string
	filter              map[string][]string
	relID               uint32
	boundAt             ledger.LSN

	shape    ledger.Shape
	created  bool
	warnings []string
	err      *apiError
}

// checkShapePut applies the filter limits, normalises the table name and
// sorts the filter's values.
func (s *Server) checkShapePut(p *shapePut) {
	if p.err = s.limits.checkFilter(p.filter); p.err != nil {
		return
	}
	p.table = normalizeTable(p.table)
	for col, vals := range p.filter {
		vals = slices.Clone(vals)
		slices.Sort(vals)
		p.filter[col] = slices.Compact(vals)
	}
}

// putShapes binds each shape to its table's relation (one lookup per
// table and filter columns), admits the new ones under the per-consumer
// limit, reads the replica identity of their tables (once per table), and
// creates them all in one ledger call, which is one group commit. Each
// shape's outcome is left in it. The caller checked the consumers' leases.
func (s *Server) putShapes(ctx context.Context, ps []*shapePut) {
	s.bindShapes(ctx, ps)
	idc := s.identityChecker(ctx)
	var filtered []string
	for _, p := range ps {
		if p.err == nil && len(p.filter) > 0 && !slices.Contains(filtered, p.table) {
			filtered = append(filtered, p.table)
		}
	}
	if len(filtered) > 1 {
		idc.prefetch(filtered)
	}
	var specs []ledger.ShapeSpec
	var live []*shapePut
	for _, p := range ps {
		if p.err != nil {
			continue
		}
		release, e := s.admitShape(p.id, p.consumer)
		if e != nil {
			p.err = e
			continue
		}
		defer release()
		p.warnings = idc.check(p.table, p.filter)
		specs = append(specs, ledger.ShapeSpec{ID: p.id, Consumer: p.consumer, Table: p.table, Filter: p.filter,
			RelID: p.relID, BoundAt: p.boundAt})
		live = append(live, p)
	}
	if len(specs) == 0 {
		return
	}
	res, err := s.hub.CreateShapes(specs)
	for i, p := range live {
		e := err
		if e == nil {
			e = res[i].Err
		}
		if e != nil {
			p.err, p.warnings = fromLedger(e, "shape "+p.id), nil
			continue
		}
		p.shape, p.created = res[i].Shape, res[i].Created
	}
}

// bindShapes resolves the relation of each shape's table, once per table
// and set of filter columns.
func (s *Server) bindShapes(ctx context.Context, ps []*shapePut) {
	if s.cfg.Tables == nil {
		return
	}
	type bound struct {
		relID   uint32
		boundAt ledger.LSN
		err     *apiError
	}
	seen := make(map[string]bound)
	for _, p := range ps {
		if p.err != nil {
			continue
		}
		cols := slices.Sorted(maps.Keys(p.filter))
		key := p.table + "\x00" + strings.Join(cols, "\x00")
		b, ok := seen[key]
		if !ok {
			b.relID, b.boundAt, b.err = s.resolveTable(ctx, p.table, cols)
			seen[key] = b
		}
		p.relID, p.boundAt, p.err = b.relID, b.boundAt, b.err
	}
}

// resolveTable checks that table exists with the filter's columns and
// returns its relation OID and the position the answer holds from.
func (s *Server) resolveTable(ctx context.Context, table string, cols []string) (uint32, ledger.LSN, *apiError) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var relID uint32
	var boundAt ledger.LSN
	var err error
	if res, ok := s.cfg.Tables.(TableResolver); ok {
		relID, boundAt, err = res.ResolveTable(ctx, table, cols)
	} else {
		err = s.cfg.Tables.CheckTable(ctx, table)
	}
	switch {
	case errors.Is(err, ErrUnknownTable):
		return 0, 0, errorf(http.StatusUnprocessableEntity, wire.CodeUnknownTable, "%v", err)
	case errors.Is(err, ErrUnknownColumn):
		return 0, 0, errorf(http.StatusUnprocessableEntity, wire.CodeUnknownColumn, "%v", err)
	case err != nil:
		return 0, 0, errorf(http.StatusServiceUnavailable, wire.CodeUnavailable, "checking table %s in Postgres: %v; retry", table, err)
	}
	return relID, boundAt, nil
}

// testHookDeleteShape, when set by a test, runs after DELETE checked the
// shape's owner and before it asks the ledger.
var testHookDeleteShape func()

func (s *Server) deleteShape(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sh, ok := s.l.Shape(id)
	if !ok {
		writeError(w, s.missingShape(id))
		return
	}
	if e := s.checkLease(r, sh.Consumer); e != nil {
		writeError(w, e)
		return
	}
	if testHookDeleteShape != nil {
		testHookDeleteShape()
	}
	// Delete the generation whose owner was checked: the id may have been
	// evicted and created again, by another consumer, since the read.
	if err := s.l.DeleteShapeIf(sh); err != nil {
		if errors.Is(err, ledger.ErrChanged) {
			writeError(w, s.missingShape(id))
			return
		}
		writeError(w, fromLedger(err, "shape "+id))
		return
	}
	s.hub.RemoveShape(id, "")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getShape(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sh, ok := s.l.Shape(id)
	if !ok {
		writeError(w, s.missingShape(id))
		return
	}
	writeJSON(w, http.StatusOK, s.shapeView(sh, s.walEnd(r.Context())))
}

// listShapes answers one page of shapes in id order (see page), or with
// ?holding=1 every holder, worst first.
func (s *Server) listShapes(w http.ResponseWriter, r *http.Request) {
	holding := r.URL.Query().Get("holding")
	walEnd := s.walEnd(r.Context())
	out := []wire.Shape{}
	if holding != "" && holding != "0" && holding != "false" {
		for _, sh := range s.l.Holders(0) {
			out = append(out, s.shapeView(sh, walEnd))
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	p, e := parsePage(r)
	if e != nil {
		writeError(w, e)
		return
	}
	all := s.l.Shapes()
	from, to := p.bounds(len(all), func(i int) string { return all[i].ID })
	for _, sh := range all[from:to] {
		out = append(out, s.shapeView(sh, walEnd))
	}
	if to > from {
		setNext(w, to < len(all), all[to-1].ID)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) shapeView(sh ledger.Shape, walEnd ledger.LSN) wire.Shape {
	v := wire.Shape{ID: sh.ID, Consumer: sh.Consumer, Table: sh.Table, Filter: sh.Filter, Generation: sh.Generation,
		StartLSN: sh.StartLSN.String(), FlushedLSN: sh.FlushedLSN.String(), CreatedAt: sh.CreatedAt, RelationOID: sh.RelID}
	if sh.LastSent != 0 {
		v.LastSentLSN = sh.LastSent.String()
	}
	if sh.PendingLSN != 0 {
		v.PendingLSN = sh.PendingLSN.String()
		ps := sh.PendingSince
		v.PendingSince = &ps
		if walEnd > sh.PendingLSN {
			v.PinnedBytes = int64(walEnd - sh.PendingLSN)
		}
	}
	if !sh.LastAckAt.IsZero() {
		la := sh.LastAckAt
		v.LastAckAt = &la
	}
	return v
}

// walEnd asks Postgres for its WAL end, or returns 0 when it cannot.
func (s *Server) walEnd(ctx context.Context) ledger.LSN {
	if s.cfg.Slot == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := s.cfg.Slot.SlotStatus(ctx)
	if err != nil {
		return 0
	}
	return st.WALEnd
}

var evictReasons = map[ledger.Reason]bool{
	ledger.ReasonManual: true, ledger.ReasonLeaseExpired: true, ledger.ReasonProcessGone: true,
	ledger.ReasonNotInInventory: true, ledger.ReasonStalled: true, ledger.ReasonWALBudget: true, ledger.ReasonReleased: true,
}

func (s *Server) evict(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req wire.EvictRequest
	if e := decode(w, r, &req, true); e != nil {
		writeError(w, e)
		return
	}
	reason := ledger.Reason(req.Reason)
	if reason == "" {
		reason = ledger.ReasonManual
	}
	if !evictReasons[reason] {
		writeError(w, errorf(http.StatusBadRequest, wire.CodeInvalid, "reason %q is not an eviction reason; use manual", req.Reason))
		return
	}
	sh, ok := s.l.Shape(id)
	if !ok {
		writeError(w, s.missingShape(id))
		return
	}
	if req.DryRun {
		safe := s.l.SafeLSN()
		after := s.safeWithout(id)
		res := wire.EvictResponse{Shape: id, DryRun: true, FlushLSN: after.String()}
		if sh.PendingLSN != 0 && after > safe {
			res.FreedBytes = int64(after - safe)
		}
		writeJSON(w, http.StatusOK, res)
		return
	}
	ts, err := s.l.Evict(id, reason, "requested through the API", "operator")
	if err != nil {
		writeError(w, fromLedger(err, "shape "+id))
		return
	}
	s.hub.RemoveShape(id, reason)
	s.log.Info().Str("shape", id).Str("reason", string(reason)).Msg("shape evicted by an operator")
	tv := wire.TombstoneOf(ts)
	writeJSON(w, http.StatusOK, wire.EvictResponse{Shape: id, Tombstone: &tv})
}

// safeWithout computes the safe flush LSN if the shape were evicted: the
// smallest pending LSN of the other shapes, or the processed position.
func (s *Server) safeWithout(id string) ledger.LSN {
	for _, h := range s.l.Holders(0) {
		if h.ID != id {
			return h.PendingLSN
		}
	}
	return s.l.Position()
}

// missingShape is the answer for a shape id the ledger does not track: 410
// with the eviction reason when it has a tombstone (I4), else 404.
func (s *Server) missingShape(id string) *apiError {
	if ts, ok := s.l.Tombstone(id); ok {
		return &apiError{status: http.StatusGone, code: wire.CodeShapeGone, reason: string(ts.Reason),
			message: "shape " + id + " was evicted (" + string(ts.Reason) + "); see GET /v1/evictions"}
	}
	return errorf(http.StatusNotFound, wire.CodeShapeNotFound, "shape %s does not exist", id)
}
