package api

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
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
	if req.Consumer == "" || req.Table == "" {
		writeError(w, errorf(http.StatusBadRequest, wire.CodeInvalid, `a shape needs "consumer" and "table" ("schema.table")`))
		return
	}
	if e := s.limits.checkFilter(req.Filter); e != nil {
		writeError(w, e)
		return
	}
	if e := s.checkLease(r, req.Consumer); e != nil {
		writeError(w, e)
		return
	}
	table := normalizeTable(req.Table)
	var relID uint32
	var boundAt ledger.LSN
	if s.cfg.Tables != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		var err error
		if res, ok := s.cfg.Tables.(TableResolver); ok {
			relID, boundAt, err = res.ResolveTable(ctx, table, slices.Sorted(maps.Keys(req.Filter)))
		} else {
			err = s.cfg.Tables.CheckTable(ctx, table)
		}
		cancel()
		if errors.Is(err, ErrUnknownTable) {
			writeError(w, errorf(http.StatusUnprocessableEntity, wire.CodeUnknownTable, "%v", err))
			return
		}
		if errors.Is(err, ErrUnknownColumn) {
			writeError(w, errorf(http.StatusUnprocessableEntity, wire.CodeUnknownColumn, "%v", err))
			return
		}
		if err != nil {
			writeError(w, errorf(http.StatusServiceUnavailable, wire.CodeUnavailable, "checking table %s in Postgres: %v; retry", table, err))
			return
		}
	}
	filter := req.Filter
	for col, vals := range filter {
		vals = slices.Clone(vals)
		slices.Sort(vals)
		filter[col] = slices.Compact(vals)
	}
	release, e := s.admitShape(id, req.Consumer)
	if e != nil {
		writeError(w, e)
		return
	}
	defer release()
	warnings := s.checkIdentity(r.Context(), table, filter)
	sh, created, err := s.hub.CreateShape(ledger.ShapeSpec{ID: id, Consumer: req.Consumer, Table: table, Filter: filter,
		RelID: relID, BoundAt: boundAt})
	if err != nil {
		writeError(w, fromLedger(err, "shape "+id))
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.log.Info().Str("shape", id).Str("consumer", sh.Consumer).Str("table", table).Uint64("generation", sh.Generation).
			Stringer("start_lsn", sh.StartLSN).Msg("shape created")
	}
	writeJSON(w, status, wire.ShapeResponse{ID: sh.ID, Generation: sh.Generation, StartLSN: sh.StartLSN.String(), Warnings: warnings})
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
