package api

import (
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ledgerd/ledgerd/api/wire"
)

// Gate is the API's HTTP handler for the daemon's whole life. The listener
// opens before ledgerd reaches Postgres, so that an orchestrator sees the
// process alive (/healthz) while it waits, and why it is not ready
// (/readyz). Until the ledger file is open nothing else can be answered
// truthfully: shapes, leases and positions live in that file, and an ack
// taken before it is open could not be made durable (I2, I6). So until Serve
// hands it a Server, the Gate answers /healthz, /readyz (503 with the
// reason) and /metrics itself, and every other call 503 not_ready with the
// reason. The bearer token guards the same calls as it does afterwards.
type Gate struct {
	reg      *prometheus.Registry
	starting http.Handler

	mu     sync.Mutex
	reason string

	srv atomic.Pointer[http.Handler]
}

// GateConfig configures a Gate.
type GateConfig struct {
	// Token and AdminToken are the Server's (Config.Token, Config.AdminToken).
	Token, AdminToken string
	// Registry is what /metrics serves; give the Server the same one
	// (Config.Registry). Nil means a new registry.
	Registry *prometheus.Registry
	// Version is the build's version, exported as ledgerd_build_info.
	Version string
}

// NewGate returns a Gate that answers as a daemon still starting, with the
// reason "starting".
func NewGate(cfg GateConfig) *Gate {
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	cfg.Registry.MustRegister(buildInfo(cfg.Version))
	g := &Gate{reg: cfg.Registry, reason: "starting"}
	m := http.NewServeMux()
	m.Handle("GET /metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{}))
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(http.StatusServiceUnavailable, wire.CodeNotReady,
			"ledgerd is starting and cannot answer %s %s yet: %s; retry once /readyz answers 200", r.Method, r.URL.Path, g.Reason()))
	})
	g.starting = requireToken(cfg.Token, cfg.AdminToken, m)
	return g
}

// Registry is the registry /metrics serves.
func (g *Gate) Registry() *prometheus.Registry { return g.reg }

// NotReady sets the reason the start-up answers give, e.g. "waiting for
// Postgres: connection refused".
func (g *Gate) NotReady(reason string) {
	g.mu.Lock()
	g.reason = reason
	g.mu.Unlock()
}

// Reason returns the reason set by NotReady.
func (g *Gate) Reason() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reason
}

// Serve hands every later call to s.
func (g *Gate) Serve(s *Server) {
	h := s.Handler()
	g.srv.Store(&h)
}

// ServeHTTP implements http.Handler.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := g.srv.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	g.starting.ServeHTTP(w, r)
}

// buildInfo is ledgerd_build_info: always 1, labelled with the version and
// the Go release it was built with, so dashboards can tell builds apart.
func buildInfo(version string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "ledgerd_build_info",
		Help:        "Always 1; the labels name the build's version and Go release.",
		ConstLabels: prometheus.Labels{"version": version, "go_version": runtime.Version()}})
	g.Set(1)
	return g
}
