package stream

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/ledger"
)

// Defaults for the zero values of Config.
const (
	DefaultStatusInterval    = time.Second
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultReconnectMin      = 250 * time.Millisecond
	DefaultReconnectMax      = 30 * time.Second
	DefaultChunkBytes        = 256 << 10
)

// HeartbeatPrefix is the prefix of the logical messages the heartbeat emits.
// They arrive as transactions whose only content is such a Message; a
// Handler accounts for them like any transaction that touches no shape.
const HeartbeatPrefix = "ledgerd"

// Handler receives decoded transactions and decides what may be confirmed.
// HandleTxn and Idle are called from the stream goroutine, one at a time.
// FlushLSN is also called from a timer goroutine while HandleTxn blocks, so
// it must be safe for concurrent use.
type Handler interface {
	// HandleTxn gets each committed transaction in commit order, a large
	// one in pieces as it is decoded (Txn.Part, Txn.More; see
	// Config.ChunkBytes). It may block (backpressure); the stream keeps the
	// connection alive meanwhile. When it returns nil for the last piece the
	// transaction is accounted for: it will not be handed again by this
	// Stream (see Run). A session that ends after some pieces of a
	// transaction hands it again from its first piece; the next piece the
	// handler gets is then a first one (Txn.First), of that transaction or
	// of an earlier one. An error ends the session, which is retried from
	// the slot's confirmed position.
	HandleTxn(ctx context.Context, txn *Txn) error
	// Idle reports the server's WAL end when every transaction received so
	// far has been handled and none is open: with nothing pending, the
	// handler may let the flush position advance to it (I3). After a
	// reconnect it may report less than before; keep the maximum.
	Idle(walEnd ledger.LSN)
	// FlushLSN is the position that may be confirmed to Postgres now: it is
	// sent as the write, flush and apply position (I1, I6).
	FlushLSN() ledger.LSN
}

// Batcher is a Handler that works per batch of transactions. The stream
// calls EndBatch whenever it has handed over everything it has read from
// the connection and is about to read again (and possibly wait), and when
// a session ends: what the handler does once per batch then (the deliver
// Hub wakes each consumer's writer) is not done per transaction while a
// backlog streams in. EndBatch may be called from another goroutine than
// HandleTxn, and when nothing was handed over.
type Batcher interface {
	EndBatch()
}

// Config configures a Stream.
type Config struct {
	// ConnString is a Postgres connection string for the slot's database.
	// The stream adds replication=database itself. Required.
	ConnString string
	// Slot is the logical slot (plugin pgoutput) to read. Required.
	Slot string
	// Publication is the publication whose tables are streamed. Required.
	Publication string
	// CreateSlot creates the slot when it is missing; otherwise a missing
	// slot is ErrSlotMissing.
	CreateSlot bool
	// CreatePublication creates the publication when it is missing: "all"
	// for FOR ALL TABLES, or a comma list of tables ("s.t1,s.t2"). Empty
	// means a missing publication is ErrPublicationMissing.
	CreatePublication string
	// StatusInterval is the longest time between two status updates sent to
	// Postgres. Zero or negative means DefaultStatusInterval (1s).
	StatusInterval time.Duration
	// HeartbeatInterval is the period of the pg_logical_emit_message
	// heartbeat that lets an idle database's slot advance on a busy cluster.
	// Zero means DefaultHeartbeatInterval (10s); negative turns it off (the
	// -heartbeat-interval flag's 0 maps to a negative value here).
	HeartbeatInterval time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnect attempts. Zero or negative means DefaultReconnectMin (250ms)
	// and DefaultReconnectMax (30s).
	ReconnectMin, ReconnectMax time.Duration
	// Logger receives the stream's logs; a "component" field is added.
	Logger zerolog.Logger
	// ChunkBytes is the size at which an open transaction is handed to the
	// Handler in pieces (Decoder.ChunkBytes): changes are routed as they
	// are decoded rather than after the commit. Zero means
	// DefaultChunkBytes (256 KiB); negative hands transactions over whole.
	ChunkBytes int
	// OnStreaming, when set, is called from the stream's goroutine each time
	// a session starts streaming (the daemon's start is complete once the
	// first one does). It must return quickly.
	OnStreaming func()
}

func (c *Config) validate() error {
	switch {
	case c.ConnString == "":
		return fmt.Errorf("%w: ConnString is required", ErrConfig)
	case c.Slot == "":
		return fmt.Errorf("%w: Slot is required", ErrConfig)
	case c.Publication == "":
		return fmt.Errorf("%w: Publication is required", ErrConfig)
	}
	if err := CheckSlotName(c.Slot); err != nil {
		return err
	}
	if err := CheckPublicationName(c.Publication); err != nil {
		return err
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = DefaultStatusInterval
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.ChunkBytes == 0 {
		c.ChunkBytes = DefaultChunkBytes
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax <= 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	if c.ReconnectMax < c.ReconnectMin {
		c.ReconnectMax = c.ReconnectMin
	}
	return nil
}
