package api

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
)

// TableChecker says whether a table may be the table of a shape. It returns
// an error wrapping ErrUnknownTable (422) when the table does not exist or
// cannot reach the stream, any other error when it could not find out (503).
type TableChecker interface {
	CheckTable(ctx context.Context, table string) error
}

// TableResolver is a TableChecker that also binds a new shape to its
// table's relation identity. ResolveTable checks the table as CheckTable
// does and that it has every one of columns (an error wrapping
// ErrUnknownColumn, 422, names the missing ones), and returns the table's
// relation OID and the server WAL position the answer holds from. The API
// uses it instead of CheckTable when Config.Tables implements it.
type TableResolver interface {
	TableChecker
	ResolveTable(ctx context.Context, table string, columns []string) (relID uint32, at ledger.LSN, err error)
}

// SlotStatus is what pg_replication_slots and the server say of the slot.
type SlotStatus struct {
	ConfirmedFlush ledger.LSN
	RestartLSN     ledger.LSN
	WALEnd         ledger.LSN // pg_current_wal_lsn()
	WALStatus      string
	Active         bool
	ActivePID      int
	RetainedBytes  int64 // WAL kept for the slot: WALEnd - RestartLSN
}

// SlotReader reads the slot's state from Postgres.
type SlotReader interface {
	SlotStatus(ctx context.Context) (SlotStatus, error)
}

// Config configures a Server. Ledger and Hub are required.
type Config struct {
	Ledger *ledger.Ledger
	Hub    *deliver.Hub
	// Tables checks the table of a new shape; nil accepts every table.
	Tables TableChecker
	// Slot reads pg_replication_slots for status and metrics; nil leaves
	// those fields empty.
	Slot SlotReader
	// Identity reads the replica identity of the tables shapes filter, for
	// the PUT answer's warnings and the status' key-only tables; nil skips
	// both.
	Identity IdentityManager
	// SetIdentityFull (-replica-identity full) sets REPLICA IDENTITY FULL on
	// a table the first time a shape filters it on a column outside its
	// key, so deletes can be filtered; without it the PUT answer warns.
	SetIdentityFull bool
	// SlotName is reported by /v1/status.
	SlotName string
	// Token, when set, is the bearer token every call must carry.
	Token string
	// AdminToken, when set, is the bearer token /v1/debug/* and POST
	// /v1/shapes/{id}/evict need instead of Token: every consumer process
	// holds Token, and these calls copy the whole ledger or evict another
	// consumer's shapes. It is accepted on every other call as well.
	AdminToken string
	// Streaming reports whether the replication stream is open (/readyz);
	// nil means ready.
	Streaming func() bool
	// Reconnects returns the stream's reconnect count for /metrics; nil
	// exports 0.
	Reconnects func() uint64
	// Defer records a consumer's answer to a challenge (docs/api.md, "Challenges"); nil
	// accepts and ignores it.
	Defer func(consumer string, shapes []string) error
	// Limits bound filters, ids and counts; zero fields mean the defaults.
	Limits Limits
	// Clock gives the time for ages and expiry; nil means the system clock.
	Clock ledger.Clock
	// Logger receives log lines; a "component" field is added.
	Logger zerolog.Logger
	// Registry is the registry /metrics serves (a Gate's, so that the
	// metrics served while starting go on); nil means a new one.
	Registry *prometheus.Registry
}

// Server serves API v1. Create it with New and mount Handler.
type Server struct {
	cfg Config
	l   *ledger.Ledger
	hub *deliver.Hub
	log zerolog.Logger
	reg *prometheus.Registry
	mux *http.ServeMux

	limits   Limits
	admitted admissions // creations admitted under the count limits
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	s := &Server{
		cfg:    cfg,
		l:      cfg.Ledger,
		hub:    cfg.Hub,
		log:    cfg.Logger.With().Str("component", "api").Logger(),
		reg:    cfg.Registry,
		mux:    http.NewServeMux(),
		limits: cfg.Limits.withDefaults(),
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	s.reg.MustRegister(newCollector(s))
	s.routes()
	return s
}

// Registry is the Prometheus registry /metrics serves; add collectors of
// other components to it.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	return s.recoverPanics(s.logInternalErrors(s.auth(s.mux)))
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("POST /v1/consumers", s.register)
	m.HandleFunc("GET /v1/consumers", s.listConsumers)
	m.HandleFunc("GET /v1/consumers/{id}", s.getConsumer)
	m.HandleFunc("POST /v1/consumers/{id}/heartbeat", s.heartbeat)
	m.HandleFunc("DELETE /v1/consumers/{id}", s.release)
	m.HandleFunc("GET /v1/consumers/{id}/stream", s.stream)
	m.HandleFunc("POST /v1/consumers/{id}/ack", s.ack)
	m.HandleFunc("PUT /v1/shapes/{id}", s.putShape)
	m.HandleFunc("PUT /v1/consumers/{id}/shapes", s.putConsumerShapes)
	m.HandleFunc("DELETE /v1/shapes/{id}", s.deleteShape)
	m.HandleFunc("GET /v1/shapes", s.listShapes)
	m.HandleFunc("GET /v1/shapes/{id}", s.getShape)
	m.HandleFunc("POST /v1/shapes/{id}/evict", s.adminOnly(s.evict))
	m.HandleFunc("GET /v1/status", s.status)
	m.HandleFunc("GET /v1/evictions", s.evictions)
	m.HandleFunc("GET /v1/events", s.events)
	m.HandleFunc("GET /v1/debug/snapshot", s.adminOnly(s.snapshot))
	m.HandleFunc("GET /v1/openapi.yaml", s.openAPI)
	m.HandleFunc("POST /v1/debug/gc", s.adminOnly(s.gc))
	m.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: nil}))
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	m.HandleFunc("GET /readyz", s.readyz)
	// Known paths with another method get a JSON 405 rather than the
	// mux's plain-text one.
	for _, p := range []string{"/v1/consumers", "/v1/consumers/{id}", "/v1/consumers/{id}/heartbeat",
		"/v1/consumers/{id}/stream", "/v1/consumers/{id}/ack", "/v1/shapes", "/v1/shapes/{id}", "/v1/shapes/{id}/evict",
		"/v1/status", "/v1/evictions", "/v1/events", "/v1/debug/snapshot", "/metrics", "/healthz", "/readyz",
		"/v1/openapi.yaml"} {
		m.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			writeError(w, errorf(http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed,
				"%s is not a method of %s; see GET /v1/openapi.yaml or docs/api.md", r.Method, r.URL.Path))
		})
	}
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(http.StatusNotFound, wire.CodeNotFound, "no such call: %s %s; see GET /v1/openapi.yaml or docs/api.md", r.Method, r.URL.Path))
	})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Streaming != nil && !s.cfg.Streaming() {
		writeError(w, errorf(http.StatusServiceUnavailable, wire.CodeUnavailable, "the replication stream is not open yet; see the daemon's log"))
		return
	}
	if h := s.l.CommitHealth(); h.Failing {
		writeError(w, errorf(http.StatusServiceUnavailable, wire.CodeUnavailable,
			"group commits to the ledger file have failed since %s (%d attempts, retrying): %v; acks are not durable and the slot does not advance until a commit succeeds: check the file system of the ledger file (space, permissions, I/O errors)",
			h.Since.UTC().Format(time.RFC3339), h.Failures, h.Err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) now() time.Time { return s.cfg.Clock.Now() }
