package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The example finds its token as ledgerd and inspect do: -token-file or
// LEDGERD_TOKEN_FILE (the file wins over a token given itself), else -token
// or LEDGERD_TOKEN.
func TestTokenFileConvention(t *testing.T) {
	var mu sync.Mutex
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Get("Authorization")
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"unauthorized","message":"wrong token"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	flagFile, envFile, empty := filepath.Join(dir, "flag"), filepath.Join(dir, "env"), filepath.Join(dir, "empty")
	for p, c := range map[string]string{flagFile: "from-flag\n", envFile: "from-env-file\n", empty: ""} {
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"-token-file", nil, []string{"-token-file", flagFile}, "Bearer from-flag"},
		{"-token-file over LEDGERD_TOKEN_FILE", map[string]string{"LEDGERD_TOKEN_FILE": envFile}, []string{"-token-file", flagFile}, "Bearer from-flag"},
		{"LEDGERD_TOKEN_FILE over LEDGERD_TOKEN", map[string]string{"LEDGERD_TOKEN_FILE": envFile, "LEDGERD_TOKEN": "from-env"}, nil, "Bearer from-env-file"},
		{"-token still works", nil, []string{"-token", "from-flag-token"}, "Bearer from-flag-token"},
		{"LEDGERD_TOKEN still works", map[string]string{"LEDGERD_TOKEN": "from-env"}, nil, "Bearer from-env"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"-url", srv.URL, "-table", "public.t"}, tc.args...)
			code := runMain(context.Background(), args, func(k string) string { return tc.env[k] }, &out, &errb)
			if code != 1 || !strings.Contains(errb.String(), "401") {
				t.Errorf("exit %d, stderr %s; want 1 with the 401", code, errb.String())
			}
			mu.Lock()
			defer mu.Unlock()
			if got != tc.want {
				t.Errorf("Authorization %q, want %q", got, tc.want)
			}
		})
	}
	var errb bytes.Buffer
	if code := runMain(context.Background(), []string{"-url", srv.URL, "-table", "public.t", "-token-file", empty},
		func(string) string { return "" }, &bytes.Buffer{}, &errb); code != 2 || !strings.Contains(errb.String(), "is empty") {
		t.Errorf("empty token file: exit %d, stderr %s", code, errb.String())
	}
}
