package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/internal/rawsock"
)

// DefaultTimeout bounds each API call other than the change stream.
const DefaultTimeout = 30 * time.Second

// Config configures a Client.
type Config struct {
	// URL of the daemon: "http://127.0.0.1:7070" or "unix:/path/to/socket".
	URL string
	// Token is the bearer token when the daemon runs with -token-file.
	Token string
	// HTTPClient is used for every call; nil means one without a global
	// timeout (streams are long-lived), dialing the unix socket if asked.
	HTTPClient *http.Client
	// Timeout bounds each call other than the stream. Default 30s.
	Timeout time.Duration
}

// Client calls one ledgerd daemon. It is safe for concurrent use.
type Client struct {
	base    string
	token   string
	hc      *http.Client
	timeout time.Duration
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	c := &Client{token: cfg.Token, hc: cfg.HTTPClient, timeout: cfg.Timeout}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if path, ok := strings.CutPrefix(cfg.URL, "unix:"); ok {
		c.base = "http://ledgerd"
		if c.hc == nil {
			c.hc = &http.Client{Transport: newTransport(func(ctx context.Context, d *net.Dialer, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", path)
			})}
		}
		return c, nil
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: URL %q: want http://host:port or unix:/path", cfg.URL)
	}
	c.base = strings.TrimRight(cfg.URL, "/")
	if c.hc == nil {
		t := newTransport(func(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		})
		t.Proxy = http.ProxyFromEnvironment
		c.hc = &http.Client{Transport: t}
	}
	return c, nil
}

// readBufferBytes is what one read of a connection to the daemon may take
// in. The change stream comes as one HTTP chunk per batch of frames, often
// tens of KiB: through net/http's default 4 KiB buffer a batch took a read
// for the chunk header and first 4 KiB and more for the rest.
const readBufferBytes = 64 << 10

// newTransport returns the transport of a Client made without an
// HTTPClient, dialing with dial. Its connections read and write with raw
// non-blocking system calls (internal/rawsock): a consumer reads the
// stream's batches as they come, a wait for the daemon between each, and
// the Go runtime's bookkeeping of a system call that may block (which
// wakes its monitor thread after each idle moment) cost it more than the
// reads.
func newTransport(dial func(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error)) *http.Transport {
	var d net.Dialer
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, &d, network, addr)
			if err != nil {
				return nil, err
			}
			return rawsock.Wrap(c), nil
		},
		MaxIdleConnsPerHost: 16,
		ReadBufferSize:      readBufferBytes,
	}
}

// Error is an error answer of the daemon.
type Error struct {
	Status  int    // HTTP status
	Code    string // wire.Code*
	Message string
	Reason  string // on 410: why the consumer or shape is gone
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("ledgerd: %d %s: %s", e.Status, e.Code, e.Message)
	if e.Reason != "" {
		msg += " (reason " + e.Reason + ")"
	}
	return msg
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// IsGone reports whether err says the lease or a shape is gone (410).
func IsGone(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusGone
}

// Do sends one call with a JSON body (nil for none) and decodes a JSON
// answer into out (nil to discard). lease, when set, goes in Ledger-Lease.
// It returns the status and an *Error for any 4xx/5xx answer.
func (c *Client) Do(ctx context.Context, method, path, lease string, body, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.send(ctx, method, path, lease, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return resp.StatusCode, decodeError(resp)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("client: decoding the answer of %s %s: %w", method, path, err)
		}
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	return resp.StatusCode, nil
}

func (c *Client) send(ctx context.Context, method, path, lease string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("client: encoding the body of %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if lease != "" {
		req.Header.Set(wire.HeaderLease, lease)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var we wire.Error
	if err := json.Unmarshal(b, &we); err != nil || we.Code == "" {
		return &Error{Status: resp.StatusCode, Code: "http_" + fmt.Sprint(resp.StatusCode), Message: strings.TrimSpace(string(b))}
	}
	return &Error{Status: resp.StatusCode, Code: we.Code, Message: we.Message, Reason: we.Reason}
}

// Status returns GET /v1/status.
func (c *Client) Status(ctx context.Context) (wire.Status, error) {
	var st wire.Status
	_, err := c.Do(ctx, http.MethodGet, "/v1/status", "", nil, &st)
	return st, err
}
