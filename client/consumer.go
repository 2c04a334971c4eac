package client

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

// ConsumerConfig describes a consumer to register.
type ConsumerConfig struct {
	ID string
	// TTL of the lease; 0 means the daemon's -ttl.
	TTL time.Duration
	// Host and PID identify the process for the daemon's process probe;
	// PID 0 means this process.
	Host string
	PID  int
}

// Consumer is a registered consumer holding a lease.
type Consumer struct {
	c     *Client
	id    string
	lease string
	ttl   time.Duration
}

// Register registers a consumer and returns it with its new lease. A live
// lease on the same id is an *Error with code consumer_exists.
func (c *Client) Register(ctx context.Context, cfg ConsumerConfig) (*Consumer, error) {
	pid := cfg.PID
	if pid == 0 {
		pid = os.Getpid()
	}
	host := cfg.Host
	if host == "" {
		host, _ = os.Hostname()
	}
	var res wire.RegisterResponse
	_, err := c.Do(ctx, http.MethodPost, "/v1/consumers", "", wire.RegisterRequest{ID: cfg.ID, TTLMS: cfg.TTL.Milliseconds(), PID: pid, Host: host}, &res)
	if err != nil {
		return nil, err
	}
	return &Consumer{c: c, id: res.ID, lease: res.Lease, ttl: time.Duration(res.TTLMS) * time.Millisecond}, nil
}

// ID returns the consumer id.
func (k *Consumer) ID() string { return k.id }

// Lease returns the lease token.
func (k *Consumer) Lease() string { return k.lease }

// TTL returns the lease TTL the daemon granted.
func (k *Consumer) TTL() time.Duration { return k.ttl }

func (k *Consumer) path(suffix string) string {
	return "/v1/consumers/" + url.PathEscape(k.id) + suffix
}

// PutShape creates (or confirms) a shape of this consumer on table
// ("schema.table") with an optional filter (column -> allowed values).
// The answer's Warnings say what the shape will receive beyond its filter
// (deletes of a table whose replica identity is not FULL).
func (k *Consumer) PutShape(ctx context.Context, id, table string, filter map[string][]string) (wire.ShapeResponse, error) {
	var res wire.ShapeResponse
	_, err := k.c.Do(ctx, http.MethodPut, "/v1/shapes/"+url.PathEscape(id), k.lease,
		wire.ShapeRequest{Consumer: k.id, Table: table, Filter: filter}, &res)
	return res, err
}

// PutShapes creates (or confirms) many shapes of this consumer in one call
// and one durable commit. The error is about the call (a wrong lease, a
// body too large); each shape's own answer is in the result, in the order
// given: Status 201 created, 200 already there with the same definition, or
// an error status with Error, exactly as PutShape would have been answered.
func (k *Consumer) PutShapes(ctx context.Context, shapes []wire.ShapeItem) (wire.ShapesResponse, error) {
	var res wire.ShapesResponse
	_, err := k.c.Do(ctx, http.MethodPut, k.path("/shapes"), k.lease, wire.ShapesRequest{Shapes: shapes}, &res)
	return res, err
}

// DeleteShape deletes one of the consumer's shapes.
func (k *Consumer) DeleteShape(ctx context.Context, id string) error {
	_, err := k.c.Do(ctx, http.MethodDelete, "/v1/shapes/"+url.PathEscape(id), k.lease, nil, nil)
	return err
}

// Heartbeat extends the lease. shapes, when not nil, is the inventory of
// shapes the consumer still holds.
func (k *Consumer) Heartbeat(ctx context.Context, shapes []string) (wire.HeartbeatResponse, error) {
	var res wire.HeartbeatResponse
	_, err := k.c.Do(ctx, http.MethodPost, k.path("/heartbeat"), k.lease, wire.HeartbeatRequest{Shapes: shapes}, &res)
	return res, err
}

// Ack acks commit LSNs per shape and returns once the daemon made them
// durable.
func (k *Consumer) Ack(ctx context.Context, acks map[string]ledger.LSN) (wire.AckResponse, error) {
	body := wire.AckRequest{Acks: make(map[string]string, len(acks))}
	for sh, l := range acks {
		body.Acks[sh] = l.String()
	}
	var res wire.AckResponse
	_, err := k.c.Do(ctx, http.MethodPost, k.path("/ack"), k.lease, body, &res)
	return res, err
}

// AckAll acks lsn for every shape of the consumer.
func (k *Consumer) AckAll(ctx context.Context, lsn ledger.LSN) (wire.AckResponse, error) {
	var res wire.AckResponse
	_, err := k.c.Do(ctx, http.MethodPost, k.path("/ack"), k.lease, wire.AckRequest{LSN: lsn.String()}, &res)
	return res, err
}

// Defer answers a challenge: the shapes are alive and working.
func (k *Consumer) Defer(ctx context.Context, shapes []string) error {
	_, err := k.c.Do(ctx, http.MethodPost, k.path("/ack"), k.lease, wire.AckRequest{Defer: shapes}, nil)
	return err
}

// Release deletes the consumer; its shapes are evicted as released.
func (k *Consumer) Release(ctx context.Context) error {
	_, err := k.c.Do(ctx, http.MethodDelete, k.path(""), k.lease, nil, nil)
	return err
}

// Txn is a transaction frame of the change stream: a whole transaction, or
// one part of a transaction sent in several frames.
type Txn struct {
	LSN        ledger.LSN // commit LSN: ack this (after the last part)
	EndLSN     ledger.LSN // zero on every part but the last
	Xid        uint32
	CommitTime time.Time
	Changes    []wire.Change
	// Part numbers the parts of the transaction from 1 on this stream; a
	// transaction sent whole is part 1 and Last.
	Part int
	// Last is set on the transaction's last (or only) part.
	Last bool

	size int64 // bytes of its frame
}

// Shapes returns the shapes the transaction reaches, each once, in the
// order they first appear.
func (t *Txn) Shapes() []string {
	// Run calls it for every transaction, which mostly reaches a shape or
	// two: a map to find the repeats is built only past a few.
	const few = 8
	var out []string
	var seen map[string]bool
	for _, ch := range t.Changes {
		for _, s := range ch.Shapes {
			switch {
			case seen != nil:
				if seen[s] {
					continue
				}
				seen[s] = true
			case slices.Contains(out, s):
				continue
			case len(out) == few:
				seen = make(map[string]bool, 2*few)
				for _, o := range out {
					seen[o] = true
				}
				seen[s] = true
			}
			out = append(out, s)
		}
	}
	return out
}

// Stream is one open change stream. Frames are read a line at a time (a
// frame holds at most one part of a transaction, about -fragment-bytes),
// so memory stays bounded whatever the transaction's size.
type Stream struct {
	body  io.ReadCloser
	r     *bufio.Reader
	line  []byte     // a frame longer than r's buffer, put together
	frame wire.Frame // decoded into, then copied out: not one allocation per frame
	arena frameArena // row values and commit times of the stream's frames
}

// streamBuffer is the read buffer of a change stream; a frame that does
// not fit is put together in Stream.line.
const streamBuffer = 256 << 10

// OpenStream opens the consumer's change stream. While it is open the lease
// does not run out. Close it when done.
func (k *Consumer) OpenStream(ctx context.Context) (*Stream, error) {
	resp, err := k.c.send(ctx, http.MethodGet, k.path("/stream"), k.lease, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return &Stream{body: resp.Body, r: bufio.NewReaderSize(resp.Body, streamBuffer)}, nil
}

// Next returns the next frame. A txn frame is also returned decoded as Txn.
// Keepalives are returned like any frame. io.EOF means the daemon ended the
// stream.
func (s *Stream) Next() (wire.Frame, *Txn, error) {
	var line []byte
	var size int64
	for {
		var err error
		line, err = s.readLine()
		size += int64(len(line))
		if err == io.EOF && len(bytes.TrimSpace(line)) == 0 {
			return wire.Frame{}, nil, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the stream ended inside a frame
		}
		if err != nil {
			return wire.Frame{}, nil, fmt.Errorf("client: reading the change stream: %w", err)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			break
		}
	}
	s.frame = wire.Frame{} // the last frame's Changes are the caller's now
	err := decodeFrameIn(line, &s.frame, &s.arena)
	f := s.frame
	if err != nil {
		return f, nil, fmt.Errorf("client: decoding a frame: %w", err)
	}
	if f.Type != wire.FrameTxn {
		return f, nil, nil
	}
	t := &Txn{Xid: f.Xid, Changes: f.Changes, Part: f.Part, Last: f.Last, size: size}
	if t.Part == 0 {
		t.Part, t.Last = 1, true // a transaction sent whole
	}
	if t.LSN, err = ledger.ParseLSN(f.LSN); err != nil {
		return f, nil, fmt.Errorf("client: txn frame: %w", err)
	}
	if f.EndLSN != "" {
		if t.EndLSN, err = ledger.ParseLSN(f.EndLSN); err != nil {
			return f, nil, fmt.Errorf("client: txn frame: %w", err)
		}
	}
	if f.CommitTime != nil {
		t.CommitTime = *f.CommitTime
	}
	return f, t, nil
}

// more reports whether another whole frame is read already: Next returns
// it without waiting for the daemon.
func (s *Stream) more() bool {
	b, _ := s.r.Peek(s.r.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// readLine returns the next line, valid until the next call.
func (s *Stream) readLine() ([]byte, error) {
	if cap(s.line) > 4*streamBuffer {
		s.line = nil // one huge frame: do not keep its buffer
	}
	s.line = s.line[:0]
	for {
		b, err := s.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			s.line = append(s.line, b...)
			continue
		}
		if len(s.line) > 0 {
			s.line = append(s.line, b...)
			b = s.line
		}
		return b, err
	}
}

// Close closes the stream.
func (s *Stream) Close() error { return s.body.Close() }
