package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// inspect -url finds the daemon's token by the convention ledgerd and
// client/example share: -token-file, else the file LEDGERD_TOKEN_FILE names,
// else LEDGERD_TOKEN. An empty token file is refused with the fix named.
func TestTokenFileConvention(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"unauthorized","message":"wrong token"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		check(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	flagFile, envFile, empty := write("flag", "from-flag\n"), write("env", "from-env-file\n"), write("empty", "\n")
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"-token-file wins", map[string]string{"LEDGERD_TOKEN_FILE": envFile, "LEDGERD_TOKEN": "from-env"}, []string{"-token-file", flagFile}, "Bearer from-flag"},
		{"LEDGERD_TOKEN_FILE before LEDGERD_TOKEN", map[string]string{"LEDGERD_TOKEN_FILE": envFile, "LEDGERD_TOKEN": "from-env"}, nil, "Bearer from-env-file"},
		{"LEDGERD_TOKEN alone", map[string]string{"LEDGERD_TOKEN": "from-env"}, nil, "Bearer from-env"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			r := runInspect(t, tc.env, append(append([]string{"-url", srv.URL}, tc.args...), "status")...)
			if r.code != exitCannot || !strings.Contains(r.stderr, "401") {
				t.Errorf("exit %d, stderr %s; want 2 with the 401", r.code, r.stderr)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) == 0 || got[0] != tc.want {
				t.Errorf("Authorization %q, want %q", got, tc.want)
			}
		})
	}
	r := runInspect(t, map[string]string{"LEDGERD_TOKEN_FILE": empty}, "-url", srv.URL, "status")
	if r.code != exitCannot || !strings.Contains(r.stderr, "LEDGERD_TOKEN_FILE") || !strings.Contains(r.stderr, "is empty") {
		t.Errorf("empty LEDGERD_TOKEN_FILE: exit %d, stderr %s", r.code, r.stderr)
	}
}

func TestVersionFlag(t *testing.T) {
	r := runInspect(t, nil, "-version")
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "inspect ") || len(strings.Fields(r.stdout)) != 3 {
		t.Errorf("-version: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
