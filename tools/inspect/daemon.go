package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/ledgerd/ledgerd/api/wire"
)

// daemonClient talks to a running ledgerd's API (docs/api.md).
type daemonClient struct {
	base  string // http://host:port, or http://unix for a unix socket
	token string
	hc    *http.Client
}

func (a *App) newDaemonClient() (*daemonClient, error) {
	d := &daemonClient{hc: a.env.HTTP}
	u := strings.TrimRight(a.g.URL, "/")
	switch {
	case strings.HasPrefix(u, "unix:"):
		sock := strings.TrimPrefix(u, "unix:")
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", sock)
		}}
		d.hc = &http.Client{Transport: tr, Timeout: a.env.HTTP.Timeout}
		d.base = "http://unix"
	case strings.HasPrefix(u, "http://"), strings.HasPrefix(u, "https://"):
		d.base = u
	default:
		return nil, usageErrorf("-url %q: give the daemon's address as http://HOST:PORT or unix:/path (its -listen)", a.g.URL)
	}
	tok, err := a.token()
	if err != nil {
		return nil, err
	}
	d.token = tok
	return d, nil
}

// token returns the daemon's bearer token, by the convention ledgerd and
// client/example share: -token-file, else the file LEDGERD_TOKEN_FILE
// names, else LEDGERD_TOKEN itself.
func (a *App) token() (string, error) {
	flagName, path := "-token-file", a.g.TokenFile
	if path == "" {
		flagName, path = "LEDGERD_TOKEN_FILE", a.env.Getenv("LEDGERD_TOKEN_FILE")
	}
	if path == "" {
		return strings.TrimSpace(a.env.Getenv("LEDGERD_TOKEN")), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w; point it at the daemon's token file", flagName, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s %s is empty: point it at the file of ledgerd's -token-file", flagName, path)
	}
	return tok, nil
}

func (d *daemonClient) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+path, nil)
	if err != nil {
		return nil, err
	}
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w; is ledgerd running and listening there (its -listen)?", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e wire.Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Message != "" {
			msg = e.Message
		}
		if resp.StatusCode == http.StatusUnauthorized {
			return nil, fmt.Errorf("GET %s: 401 %s; give the daemon's token with -token-file, LEDGERD_TOKEN_FILE or LEDGERD_TOKEN", path, msg)
		}
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, msg)
	}
	return resp, nil
}

// snapshot downloads /v1/debug/snapshot into a temporary file, so that -url
// reads the ledger exactly as -db does (ledger.Load). cleanup removes it.
func (d *daemonClient) snapshot(ctx context.Context) (path string, cleanup func(), err error) {
	resp, err := d.get(ctx, "/v1/debug/snapshot")
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	f, err := os.CreateTemp("", "ledgerd-snapshot-*.db")
	if err != nil {
		return "", nil, fmt.Errorf("creating a temporary file for the snapshot: %w; set TMPDIR to a writable directory", err)
	}
	cleanup = func() { os.Remove(f.Name()) }
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		cleanup()
		return "", nil, fmt.Errorf("downloading the snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("writing the snapshot: %w", err)
	}
	return f.Name(), cleanup, nil
}

// views reads /v1/status and /v1/shapes?holding=1: the pending state that
// lives only in the daemon's memory. A failure is recorded, not fatal.
func (d *daemonClient) views(ctx context.Context) *DaemonView {
	v := &DaemonView{}
	var st wire.Status
	if err := d.getJSON(ctx, "/v1/status", &st); err != nil {
		v.Err = err.Error()
		return v
	}
	v.Status = &st
	var holding []wire.Shape
	if err := d.getJSON(ctx, "/v1/shapes?holding=1", &holding); err != nil {
		v.Err = err.Error()
		return v
	}
	v.Holding = holding
	return v
}

func (d *daemonClient) getJSON(ctx context.Context, path string, out any) error {
	resp, err := d.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(out); err != nil {
		return fmt.Errorf("GET %s: decoding the answer: %w", path, err)
	}
	return nil
}
