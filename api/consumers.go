package api

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
)

// maxTTL bounds a lease: a longer one would let a dead consumer pin the slot
// for that long (I3).
const maxTTL = 24 * time.Hour

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var req wire.RegisterRequest
	if e := decode(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	if e := validID("consumer", req.ID); e != nil && !s.knownConsumer(req.ID) {
		writeError(w, e)
		return
	}
	// Compare in milliseconds before converting: a large ttl_ms overflows
	// time.Duration into a negative or short lease.
	if req.TTLMS < 0 || req.TTLMS > maxTTL.Milliseconds() {
		writeError(w, errorf(http.StatusBadRequest, wire.CodeInvalid,
			"ttl_ms %d is out of range: it must be between 0 (the daemon's -ttl) and %d (24h)", req.TTLMS, maxTTL.Milliseconds()))
		return
	}
	ttl := time.Duration(req.TTLMS) * time.Millisecond
	if req.PID < 0 {
		writeError(w, errorf(http.StatusBadRequest, wire.CodeInvalid, "pid must not be negative"))
		return
	}
	if e := checkField("host", req.Host, maxHostBytes); e != nil {
		writeError(w, e)
		return
	}
	if e := checkField("proc_start", req.ProcStart, maxProcStartBytes); e != nil {
		writeError(w, e)
		return
	}
	release, e := s.admitConsumer(req.ID)
	if e != nil {
		writeError(w, e)
		return
	}
	defer release()
	c, err := s.l.Register(ledger.ConsumerSpec{ID: req.ID, TTL: ttl, PID: req.PID, ProcStart: req.ProcStart, Host: req.Host})
	if err != nil {
		writeError(w, fromLedger(err, "consumer "+req.ID))
		return
	}
	s.log.Info().Str("consumer", c.ID).Uint64("epoch", c.Epoch).Dur("ttl", c.TTL).Msg("consumer registered")
	writeJSON(w, http.StatusCreated, wire.RegisterResponse{ID: c.ID, Lease: c.Lease, TTLMS: c.TTL.Milliseconds(), ExpiresAt: c.ExpiresAt})
}

// checkLease authenticates a call on the consumer's own resources.
func (s *Server) checkLease(r *http.Request, id string) *apiError {
	l, e := lease(r)
	if e != nil {
		return e
	}
	if err := s.l.CheckLease(id, l); err != nil {
		return fromLedger(err, "consumer "+id)
	}
	return nil
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	l, e := lease(r)
	if e != nil {
		writeError(w, e)
		return
	}
	var req wire.HeartbeatRequest
	if e := decode(w, r, &req, true); e != nil {
		writeError(w, e)
		return
	}
	if e := s.checkInventory(req.Shapes); e != nil {
		writeError(w, e)
		return
	}
	c, err := s.l.Heartbeat(id, l, req.Shapes)
	if err != nil {
		writeError(w, fromLedger(err, "consumer "+id))
		return
	}
	writeJSON(w, http.StatusOK, wire.HeartbeatResponse{ExpiresAt: c.ExpiresAt, Evicted: s.evictedOf(c)})
}

// evictedOf lists the consumer's shapes evicted during its current lease
// and not created again since.
func (s *Server) evictedOf(c ledger.Consumer) []wire.ShapeReason {
	out := []wire.ShapeReason{}
	for _, ts := range s.l.Tombstones() {
		if ts.Consumer != c.ID || ts.At.Before(c.RegisteredAt) {
			continue
		}
		if sh, ok := s.l.ShapeDef(ts.Shape); ok && sh.Generation > ts.Generation {
			continue
		}
		out = append(out, wire.ShapeReason{Shape: ts.Shape, Reason: string(ts.Reason)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Shape < out[j].Shape })
	return out
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	l, e := lease(r)
	if e != nil {
		writeError(w, e)
		return
	}
	var owned []string
	for _, sh := range s.l.Shapes() {
		if sh.Consumer == id {
			owned = append(owned, sh.ID)
		}
	}
	if err := s.l.Release(id, l); err != nil {
		writeError(w, fromLedger(err, "consumer "+id))
		return
	}
	for _, sh := range owned {
		s.hub.RemoveShape(sh, "")
	}
	s.hub.DropConsumer(id)
	s.log.Info().Str("consumer", id).Int("shapes", len(owned)).Msg("consumer released")
	w.WriteHeader(http.StatusNoContent)
}

// stream serves the consumer's NDJSON change stream. While it is open the
// consumer's lease does not run out (docs/api.md, "Leases").
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	l, e := lease(r)
	if e != nil {
		writeError(w, e)
		return
	}
	epoch, err := s.l.OpenStream(id, l)
	if err != nil {
		writeError(w, fromLedger(err, "consumer "+id))
		return
	}
	defer s.l.CloseStream(id, epoch)
	w.Header().Set("Content-Type", wire.ContentTypeNDJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	log := s.log.With().Str("consumer", id).Str("remote", r.RemoteAddr).Logger()
	log.Info().Msg("change stream opened")
	err = s.hub.Serve(r.Context(), id, deliver.NewHTTPWriter(w, r))
	switch {
	case err == nil:
		log.Info().Msg("change stream closed by the consumer")
	case errors.Is(err, deliver.ErrSlowConsumer), errors.Is(err, deliver.ErrReplaced), errors.Is(err, deliver.ErrConsumerGone),
		errors.Is(err, deliver.ErrClosed):
		log.Info().Err(err).Msg("change stream ended")
	default:
		log.Info().Err(err).Msg("change stream broken")
	}
}

func (s *Server) ack(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if e := s.checkLease(r, id); e != nil {
		writeError(w, e)
		return
	}
	var req wire.AckRequest
	if e := decode(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	forms := 0
	if req.Acks != nil {
		forms++
	}
	if req.LSN != "" {
		forms++
	}
	if req.Defer != nil {
		forms++
	}
	if forms != 1 {
		writeError(w, errorf(http.StatusBadRequest, wire.CodeInvalid,
			`send exactly one of {"acks":{"shape":"lsn"}}, {"lsn":"..."} or {"defer":["shape"]}`))
		return
	}
	var (
		res deliver.AckResult
		err error
	)
	switch {
	case req.Defer != nil:
		for _, sh := range req.Defer {
			if x, ok := s.l.ShapeDef(sh); !ok || x.Consumer != id {
				writeError(w, errorf(http.StatusNotFound, wire.CodeShapeNotFound, "shape %s is not a shape of consumer %s", sh, id))
				return
			}
		}
		if s.cfg.Defer != nil {
			err = s.cfg.Defer(id, req.Defer)
		}
		res = deliver.AckResult{FlushLSN: s.l.FlushLSN()}
	case req.LSN != "":
		lsn, e := parseLSN("lsn", req.LSN)
		if e != nil {
			writeError(w, e)
			return
		}
		res, err = s.hub.AckAll(r.Context(), id, lsn)
	default:
		acks := make(map[string]ledger.LSN, len(req.Acks))
		for sh, v := range req.Acks {
			lsn, e := parseLSN("acks."+sh, v)
			if e != nil {
				writeError(w, e)
				return
			}
			acks[sh] = lsn
		}
		res, err = s.hub.Ack(r.Context(), id, acks)
	}
	if err != nil {
		writeError(w, fromLedger(err, "consumer "+id))
		return
	}
	gone := make(map[string]string, len(res.Gone))
	for sh, reason := range res.Gone {
		gone[sh] = string(reason)
	}
	// Every shape the ack named is evicted: nothing was acked, so the answer
	// is 410 with the reason (I4); a partly evicted ack is a 200 that lists
	// the evicted shapes in "gone".
	if len(req.Acks) > 0 && len(gone) == len(req.Acks) {
		first := ""
		for sh := range gone {
			if first == "" || sh < first {
				first = sh
			}
		}
		writeError(w, &apiError{status: http.StatusGone, code: wire.CodeShapeGone, reason: gone[first],
			message: fmt.Sprintf("shape %s was evicted (%s); every shape of this ack is gone: create it again with PUT /v1/shapes/%s", first, gone[first], first)})
		return
	}
	writeJSON(w, http.StatusOK, wire.AckResponse{FlushLSN: res.FlushLSN.String(), Gone: gone})
}

// listConsumers answers one page of consumers in id order (see page).
func (s *Server) listConsumers(w http.ResponseWriter, r *http.Request) {
	p, e := parsePage(r)
	if e != nil {
		writeError(w, e)
		return
	}
	all := s.l.Consumers()
	from, to := p.bounds(len(all), func(i int) string { return all[i].ID })
	out := []wire.Consumer{}
	for _, c := range all[from:to] {
		out = append(out, s.consumerView(c))
	}
	if to > from {
		setNext(w, to < len(all), all[to-1].ID)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getConsumer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.l.Consumer(id)
	if !ok {
		writeError(w, errorf(http.StatusNotFound, wire.CodeConsumerNotFound, "consumer %s is not registered", id))
		return
	}
	writeJSON(w, http.StatusOK, s.consumerView(c))
}

func (s *Server) consumerView(c ledger.Consumer) wire.Consumer {
	v := wire.Consumer{ID: c.ID, Epoch: c.Epoch, TTLMS: c.TTL.Milliseconds(), PID: c.PID, Host: c.Host,
		RegisteredAt: c.RegisteredAt, LastHeartbeat: c.LastHeartbeat, ExpiresAt: c.ExpiresAt,
		Streaming: c.Streaming, Gone: c.Gone, GoneReason: string(c.GoneReason)}
	if st, ok := s.hub.Consumer(c.ID); ok {
		v.OutboxTxns, v.OutboxBytes, v.Overflowed = st.OutboxTxns, st.OutboxBytes, st.Overflowed
	}
	return v
}

// normalizeTable turns "orders" into "public.orders"; pgoutput names every
// table schema-qualified.
func normalizeTable(t string) string {
	t = strings.TrimSpace(t)
	if t != "" && !strings.Contains(t, ".") {
		return "public." + t
	}
	return t
}
