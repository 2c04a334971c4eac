package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/ledgerd/ledgerd/api/wire"
)

// Two bearer tokens guard the API. The consumers' token (-token-file) opens
// every call; the admin token (-admin-token-file), when set, is the only one
// that opens the calls that copy the whole ledger or evict any consumer's
// shapes, so a consumer process, which must hold the consumers' token, can
// do neither. Tokens are compared through their SHA-256 in constant time:
// neither their bytes nor their length leak through timing.

// bearer returns the token of an "Authorization: Bearer <token>" header. The
// scheme is case-insensitive (RFC 7235).
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimLeft(tok, " ")
	return tok, tok != ""
}

func sameToken(got, want string) bool {
	if want == "" {
		return false
	}
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// isAdmin reports whether the call carries the admin token.
func (s *Server) isAdmin(r *http.Request) bool {
	tok, ok := bearer(r)
	return ok && sameToken(tok, s.cfg.AdminToken)
}

// auth requires a valid token on every call when the consumers' token is
// configured.
func (s *Server) auth(next http.Handler) http.Handler {
	return requireToken(s.cfg.Token, s.cfg.AdminToken, next)
}

// isProbe reports whether r is a health probe. Probes answer without a
// token: they carry no data, and an orchestrator's liveness and readiness
// checks (a kubelet, a load balancer) cannot send one. The path must be
// exactly the probe's: the mux redirects an unclean path rather than
// serving it, so "/readyz/../v1/status" is not a way around the token.
func isProbe(r *http.Request) bool {
	return r.URL.Path == "/healthz" || r.URL.Path == "/readyz"
}

// requireToken requires token (or admin) on every call but the probes when
// token is set.
func requireToken(token, admin string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isProbe(r) {
			next.ServeHTTP(w, r)
			return
		}
		tok, ok := bearer(r)
		if !ok || !(sameToken(tok, token) || sameToken(tok, admin)) {
			writeError(w, errorf(http.StatusUnauthorized, wire.CodeUnauthorized,
				"missing or wrong bearer token: send \"Authorization: Bearer <token>\" with the token of ledgerd's -token-file"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// adminOnly requires the admin token on a call when one is configured.
func (s *Server) adminOnly(next http.HandlerFunc) http.HandlerFunc {
	if s.cfg.AdminToken == "" {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.isAdmin(r) {
			writeError(w, errorf(http.StatusUnauthorized, wire.CodeUnauthorized,
				"%s %s needs the admin token: send \"Authorization: Bearer <token>\" with the token of ledgerd's -admin-token-file",
				r.Method, r.URL.Path))
			return
		}
		next(w, r)
	}
}
