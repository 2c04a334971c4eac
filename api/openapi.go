package api

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is the OpenAPI 3.1 document of API v1. It is built into the
// binary so that the document a daemon serves describes that daemon; the
// end-to-end tests check every call they make against it, so it cannot
// drift from the handlers.
//
//go:embed openapi.yaml
var openAPIDoc []byte

// OpenAPI returns the OpenAPI 3.1 document of API v1 (api/openapi.yaml).
func OpenAPI() []byte { return openAPIDoc }

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIDoc)
}
