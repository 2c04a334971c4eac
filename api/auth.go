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
	if s.cfg.Token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearer(r)
		if !ok || !(sameToken(tok, s.cfg.Token) || sameToken(tok, s.cfg.AdminToken)) {
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
