package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

// topHolders is how many holders /v1/status lists.
const topHolders = 10

func (s *Server) counts() wire.Counts {
	var c wire.Counts
	for _, x := range s.l.Consumers() {
		c.Consumers++
		switch {
		case x.Gone:
			c.ConsumersGone++
		case x.Streaming:
			c.ConsumersStream++
			c.ConsumersLive++
		default:
			c.ConsumersLive++
		}
	}
	c.Shapes = s.l.LiveShapes()
	c.ShapesPending = s.l.PendingCount()
	c.Tombstones = s.l.TombstoneCount()
	return c
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st := wire.Status{
		Slot:             s.cfg.SlotName,
		Streaming:        s.cfg.Streaming == nil || s.cfg.Streaming(),
		SafeFlushLSN:     s.l.SafeLSN().String(),
		ReportedFlushLSN: s.l.FlushLSN().String(),
		Counts:           s.counts(),
		Holders:          []wire.Shape{},
	}
	var walEnd ledger.LSN
	if s.cfg.Slot != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		slot, err := s.cfg.Slot.SlotStatus(ctx)
		cancel()
		if err != nil {
			st.SlotError = err.Error()
		} else {
			walEnd = slot.WALEnd
			st.ConfirmedFlushLSN = slot.ConfirmedFlush.String()
			st.RestartLSN = slot.RestartLSN.String()
			st.WALEnd = slot.WALEnd.String()
			st.WALStatus = slot.WALStatus
			st.RetainedBytes = slot.RetainedBytes
		}
	}
	for _, h := range s.l.Holders(topHolders) {
		st.Holders = append(st.Holders, s.shapeView(h, walEnd))
	}
	s.keyOnlyTables(r.Context(), &st)
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) evictions(w http.ResponseWriter, r *http.Request) {
	out := []wire.Tombstone{}
	for _, ts := range s.l.Tombstones() {
		out = append(out, wire.TombstoneOf(ts))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var since uint64
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, errorf(http.StatusBadRequest, wire.CodeInvalid, "since=%q is not a sequence number; pass the seq of the last event you read", v))
			return
		}
		since = n
	}
	limit := 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 100000 {
			writeError(w, errorf(http.StatusBadRequest, wire.CodeInvalid, "limit=%q must be between 1 and 100000", v))
			return
		}
		limit = n
	}
	out := []wire.Event{}
	for _, e := range s.l.Events(since, limit) {
		out = append(out, wire.EventOf(e))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="ledgerd.db"`)
	n, err := s.l.WriteSnapshot(progressWriter(w))
	if err != nil {
		// Headers may be gone already; the truncated body fails bbolt's check.
		s.log.Error().Err(err).Int64("bytes", n).Msg("writing the ledger snapshot")
		if n == 0 {
			writeError(w, fromLedger(err, ""))
		}
	}
}
