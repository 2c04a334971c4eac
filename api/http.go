package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(wire.Error{Code: wire.CodeInternal, Message: "encoding the answer: " + err.Error()})
		recordError(w, &apiError{status: status, code: wire.CodeInternal, cause: fmt.Errorf("encoding the answer: %w", err)})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ledgerd"`)
	}
	recordError(w, e)
	writeJSON(w, e.status, wire.Error{Code: e.code, Message: e.message, Reason: e.reason})
}

// decode reads a JSON body of at most wire.MaxBody bytes into v, refusing
// unknown fields and trailing data. An empty body is accepted when
// allowEmpty is set (v keeps its zero value).
func decode(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) *apiError {
	if r.ContentLength > wire.MaxBody {
		return errorf(http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge,
			"the body is %d bytes; the limit is %d (1 MiB): send fewer items per call", r.ContentLength, wire.MaxBody)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, wire.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge,
				"the body is over the limit of %d bytes (1 MiB): send fewer items per call", wire.MaxBody)
		}
		return errorf(http.StatusBadRequest, wire.CodeMalformedJSON, "reading the body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return errorf(http.StatusBadRequest, wire.CodeMalformedJSON, "the body is empty; this call takes a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			return errorf(http.StatusBadRequest, wire.CodeUnknownField,
				"%s; see docs/api.md (or GET /v1/openapi.yaml) for the fields this call takes", strings.TrimPrefix(err.Error(), "json: "))
		}
		return errorf(http.StatusBadRequest, wire.CodeMalformedJSON, "the body is not the JSON object this call takes: %v", err)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, wire.CodeMalformedJSON, "the body holds data after its JSON object; send exactly one object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, wire.CodeMalformedJSON, "the body holds data after its JSON object; send exactly one object")
	}
	return nil
}

func parseLSN(field, s string) (ledger.LSN, *apiError) {
	l, err := ledger.ParseLSN(s)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, wire.CodeMalformedLSN, "%s: %v", field, err)
	}
	return l, nil
}

// recoverPanics answers 500 instead of dropping the connection if a handler
// panics; the daemon and the ledger are unaffected.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error().Interface("panic", v).Str("path", r.URL.Path).Msg("handler panicked")
				writeError(w, errorf(http.StatusInternalServerError, wire.CodeInternal, "internal error; see the daemon's log"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// lease returns the Ledger-Lease header or a 403.
func lease(r *http.Request) (string, *apiError) {
	l := r.Header.Get(wire.HeaderLease)
	if l == "" {
		return "", errorf(http.StatusForbidden, wire.CodeWrongLease,
			"missing %s header: send the lease returned by POST /v1/consumers", wire.HeaderLease)
	}
	return l, nil
}
