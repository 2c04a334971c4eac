package api

import "net/http"

// errorRecorder keeps the error answer a handler wrote, so that
// logInternalErrors can log a 500 with its cause: the client is told to see
// the daemon's log, and the log must then say what happened.
type errorRecorder struct {
	http.ResponseWriter
	err *apiError
}

// Unwrap lets http.ResponseController reach the connection's writer (the
// change stream flushes and sets write deadlines through it).
func (r *errorRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// recordError notes e on w when w records errors.
func recordError(w http.ResponseWriter, e *apiError) {
	if r, ok := w.(*errorRecorder); ok {
		r.err = e
	}
}

// logInternalErrors logs every 500 answer with its cause, the call and the
// client's address.
func (s *Server) logInternalErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &errorRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if e := rec.err; e != nil && e.status == http.StatusInternalServerError {
			ev := s.log.Error().Str("method", r.Method).Str("path", r.URL.Path).Str("remote", r.RemoteAddr).
				Int("status", e.status).Str("code", e.code)
			if e.cause != nil {
				ev = ev.Err(e.cause)
			} else {
				ev = ev.Str("message", e.message)
			}
			ev.Msg("internal error answered")
		}
	})
}
