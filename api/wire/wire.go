package wire

import (
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// Error is the body of every 4xx and 5xx answer.
type Error struct {
	Code    string `json:"error"`
	Message string `json:"message"`
	// Reason is set on 410 answers: why the consumer or shape is gone.
	Reason string `json:"reason,omitempty"`
}

// Error codes, the "error" field of an Error.
const (
	CodeMalformedJSON      = "malformed_json"       // 400: the body is not the JSON object the call takes
	CodeUnknownField       = "unknown_field"        // 400: the body has a field the call does not take
	CodeMalformedLSN       = "malformed_lsn"        // 400: an LSN is not in the "0/16B3748" form
	CodeInvalid            = "invalid_request"      // 400: a field is missing or out of range
	CodeAckBeyondDelivered = "ack_beyond_delivered" // 400: an ack names a position that was never delivered
	CodeUnauthorized       = "unauthorized"         // 401: missing or wrong bearer token
	CodeWrongLease         = "wrong_lease"          // 403: missing, wrong or stale Ledger-Lease header
	CodeConsumerNotFound   = "consumer_not_found"   // 404
	CodeShapeNotFound      = "shape_not_found"      // 404
	CodeNotFound           = "not_found"            // 404: no such path
	CodeMethodNotAllowed   = "method_not_allowed"   // 405
	CodeConsumerExists     = "consumer_exists"      // 409: a live lease holds the consumer id
	CodeShapeConflict      = "shape_conflict"       // 409: the shape id exists with another definition or owner
	CodeLeaseGone          = "lease_gone"           // 410: the consumer's lease is gone (Reason says why)
	CodeShapeGone          = "shape_gone"           // 410: the shape was evicted (Reason says why)
	CodeBodyTooLarge       = "body_too_large"       // 413: the body is over 1 MiB
	CodeUnknownTable       = "unknown_table"        // 422: the shape's table does not exist in the database
	CodeUnknownColumn      = "unknown_column"       // 422: the shape's filter names a column its table does not have
	CodeUnavailable        = "unavailable"          // 503: the daemon is shutting down or not ready
	CodeInternal           = "internal"             // 500
)

// Error codes of the limits: a request over a per-request limit is 422, a
// count limit reached is 429.
const (
	CodeInvalidID        = "invalid_id"         // 422: a consumer or shape id outside [A-Za-z0-9._:-]{1,128}, or "." or ".."
	CodeFilterTooLarge   = "filter_too_large"   // 422: a filter lists more columns or values than allowed
	CodeValueTooLong     = "value_too_long"     // 422: a filter column name or value, host or proc_start over its length limit
	CodeTooManyConsumers = "too_many_consumers" // 429: as many consumers hold a lease as allowed
	CodeTooManyShapes    = "too_many_shapes"    // 429: the consumer owns as many shapes as allowed
)

// Headers.
const (
	// HeaderLease carries the consumer's lease token on calls on its own
	// resources.
	HeaderLease = "Ledger-Lease"
	// ContentTypeNDJSON is the media type of the change stream.
	ContentTypeNDJSON = "application/x-ndjson"
	// HeaderNext is set on a page of GET /v1/consumers or GET /v1/shapes
	// that is not the last: pass its value as ?after= for the next page.
	HeaderNext = "Ledger-Next"
)

// Pages of GET /v1/consumers and GET /v1/shapes (?limit=&after=).
const (
	DefaultPageSize = 1000
	MaxPageSize     = 10000
)

// MaxBody is the largest request body the daemon reads.
const MaxBody = 1 << 20

// RegisterRequest is the body of POST /v1/consumers.
type RegisterRequest struct {
	ID    string `json:"id"`
	TTLMS int64  `json:"ttl_ms"`
	PID   int    `json:"pid,omitempty"`
	Host  string `json:"host,omitempty"`
	// ProcStart is the process start time as the host reports it, so a
	// reused pid is not mistaken for the consumer (optional).
	ProcStart string `json:"proc_start,omitempty"`
}

// RegisterResponse is the 201 answer of POST /v1/consumers.
type RegisterResponse struct {
	ID        string    `json:"id"`
	Lease     string    `json:"lease"`
	TTLMS     int64     `json:"ttl_ms"`
	ExpiresAt time.Time `json:"expires_at"`
}

// HeartbeatRequest is the body of POST /v1/consumers/{id}/heartbeat.
// Shapes, when present (even empty), is the consumer's shape inventory.
type HeartbeatRequest struct {
	Shapes []string `json:"shapes,omitzero"`
}

// ShapeReason names an evicted shape and why.
type ShapeReason struct {
	Shape  string `json:"shape"`
	Reason string `json:"reason"`
}

// HeartbeatResponse is the 200 answer of a heartbeat.
type HeartbeatResponse struct {
	ExpiresAt time.Time     `json:"expires_at"`
	Evicted   []ShapeReason `json:"evicted"`
}

// ShapeRequest is the body of PUT /v1/shapes/{id}.
type ShapeRequest struct {
	Consumer string              `json:"consumer"`
	Table    string              `json:"table"`
	Filter   map[string][]string `json:"filter,omitempty"`
}

// ShapeResponse is the 201/200 answer of PUT /v1/shapes/{id}.
type ShapeResponse struct {
	ID         string `json:"id"`
	Generation uint64 `json:"generation"`
	StartLSN   string `json:"start_lsn"`
	// Warnings, when present, say what the shape will receive that its
	// definition does not ask for: a filter on columns that the table's
	// deletes do not carry (replica identity not FULL), so those deletes
	// reach it unfiltered.
	Warnings []string `json:"warnings,omitempty"`
}

// ShapesRequest is the body of PUT /v1/consumers/{id}/shapes: shapes of
// that consumer, created together in one durable commit.
type ShapesRequest struct {
	Shapes []ShapeItem `json:"shapes"`
}

// ShapeItem is one shape of a ShapesRequest; its consumer is the one the
// path names.
type ShapeItem struct {
	ID     string              `json:"id"`
	Table  string              `json:"table"`
	Filter map[string][]string `json:"filter,omitempty"`
}

// ShapesResponse is the 200 answer of PUT /v1/consumers/{id}/shapes: one
// result per shape, in the order of the request.
type ShapesResponse struct {
	Shapes []ShapeResult `json:"shapes"`
}

// ShapeResult is one shape's answer in a ShapesResponse. Status is what
// PUT /v1/shapes/{id} would have answered for it: 201 created, 200 the same
// definition was there, or an error status with Error (409 another
// definition, 422 an invalid id or filter, 429 over the consumer's limit).
type ShapeResult struct {
	ID         string   `json:"id"`
	Status     int      `json:"status"`
	Generation uint64   `json:"generation,omitempty"`
	StartLSN   string   `json:"start_lsn,omitempty"`
	Error      *Error   `json:"error,omitempty"`
	Warnings   []string `json:"warnings,omitempty"`
}

// AckRequest is the body of POST /v1/consumers/{id}/ack: exactly one of
// Acks (per shape), LSN (every shape of the consumer) or Defer (answer a
// challenge: still working, not stalled).
type AckRequest struct {
	Acks  map[string]string `json:"acks,omitempty"`
	LSN   string            `json:"lsn,omitempty"`
	Defer []string          `json:"defer,omitempty"`
}

// AckResponse is the 200 answer of an ack; it is sent once the ack is
// durable. Gone maps shapes of the request that were evicted to the reason.
type AckResponse struct {
	FlushLSN string            `json:"flush_lsn"`
	Gone     map[string]string `json:"gone"`
}

// EvictRequest is the body of POST /v1/shapes/{id}/evict.
type EvictRequest struct {
	Reason string `json:"reason,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// EvictResponse is the answer of an eviction. With DryRun, FlushLSN and
// FreedBytes say where the flush would move and what it would release.
type EvictResponse struct {
	Shape      string     `json:"shape"`
	DryRun     bool       `json:"dry_run,omitempty"`
	Tombstone  *Tombstone `json:"tombstone,omitempty"`
	FlushLSN   string     `json:"flush_lsn,omitempty"`
	FreedBytes int64      `json:"freed_bytes,omitempty"`
}

// Frame types of the change stream.
const (
	FrameTxn       = "txn"
	FrameChallenge = "challenge"
	FrameEvicted   = "evicted"
	FrameKeepalive = "keepalive"
)

// Frame is one line of GET /v1/consumers/{id}/stream. Type says which other
// fields are set.
type Frame struct {
	Type       string     `json:"type"`
	LSN        string     `json:"lsn,omitempty"`
	EndLSN     string     `json:"end_lsn,omitempty"`
	Xid        uint32     `json:"xid,omitempty"`
	CommitTime *time.Time `json:"commit_time,omitempty"`
	Changes    []Change   `json:"changes,omitempty"`
	// Part and Last are set on a transaction sent in several txn frames
	// (its changes for this consumer over -fragment-bytes): every frame of
	// it has the same LSN, Part counts them from 1 on each stream, and the
	// final one has Last (and, alone, EndLSN). A transaction sent in one
	// frame has neither. Its parts come one after the other, in order, with
	// at most challenge, evicted and keepalive frames between them. Ack the
	// transaction once, by its LSN, after its last part. A stream that ends
	// before the last part is sent the transaction again from part 1 on the
	// next stream: drop the parts you have.
	Part   int    `json:"part,omitempty"`
	Last   bool   `json:"last,omitempty"`
	Shape  string `json:"shape,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Change is one row change inside a txn frame: the consumer's shapes it
// reaches, and the rows as column -> text value (null for SQL NULL). A
// column whose value Postgres did not send is left out, never null: an
// unchanged TOASTed column, and every non-key column of a key-only old row.
//
// New is set for insert and update. Old depends on the table's replica
// identity: with FULL, updates and deletes carry the whole old row; with
// DEFAULT (the primary key) or USING INDEX (that index's columns), a delete,
// and an update that changed the key, carry only the key columns, and an
// update that kept the key carries no Old; with NOTHING there is no Old
// (Postgres refuses updates and deletes of a table it publishes with no
// replica identity). Truncate carries neither. A shape filtered on a column
// that a change lacks receives the change (over-delivery, never a miss), so
// a consumer must be ready for deletes of rows it never held.
type Change struct {
	Shapes []string           `json:"shapes"`
	Op     string             `json:"op"`
	Table  string             `json:"table"`
	New    map[string]*string `json:"new,omitempty"`
	Old    map[string]*string `json:"old,omitempty"`
}

// Consumer is a consumer in read-only views.
type Consumer struct {
	ID            string    `json:"id"`
	Epoch         uint64    `json:"epoch"`
	TTLMS         int64     `json:"ttl_ms"`
	PID           int       `json:"pid,omitempty"`
	Host          string    `json:"host,omitempty"`
	RegisteredAt  time.Time `json:"registered_at"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	ExpiresAt     time.Time `json:"expires_at"`
	Streaming     bool      `json:"streaming"`
	Gone          bool      `json:"gone,omitempty"`
	GoneReason    string    `json:"gone_reason,omitempty"`
	OutboxTxns    int       `json:"outbox_txns"`
	OutboxBytes   int64     `json:"outbox_bytes"`
	Overflowed    bool      `json:"overflowed,omitempty"`
}

// Shape is a shape in read-only views.
type Shape struct {
	ID           string              `json:"id"`
	Consumer     string              `json:"consumer"`
	Table        string              `json:"table"`
	Filter       map[string][]string `json:"filter,omitempty"`
	Generation   uint64              `json:"generation"`
	StartLSN     string              `json:"start_lsn"`
	FlushedLSN   string              `json:"flushed_lsn"`
	LastSentLSN  string              `json:"last_sent_lsn,omitempty"`
	PendingLSN   string              `json:"pending_lsn,omitempty"`
	PendingSince *time.Time          `json:"pending_since,omitempty"`
	PinnedBytes  int64               `json:"pinned_bytes,omitempty"`
	CreatedAt    time.Time           `json:"created_at"`
	LastAckAt    *time.Time          `json:"last_ack_at,omitempty"`
	RelationOID  uint32              `json:"relation_oid,omitempty"` // the table's relation the shape is bound to
}

// Tombstone is an eviction record.
type Tombstone struct {
	Shape      string    `json:"shape"`
	Generation uint64    `json:"generation"`
	Consumer   string    `json:"consumer"`
	Reason     string    `json:"reason"`
	Evidence   string    `json:"evidence,omitempty"`
	Actor      string    `json:"actor,omitempty"`
	At         time.Time `json:"at"`
	FlushedLSN string    `json:"flushed_lsn"`
}

// Event is one journal entry.
type Event struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"`
	Consumer string    `json:"consumer,omitempty"`
	Shape    string    `json:"shape,omitempty"`
	LSN      string    `json:"lsn,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Detail   string    `json:"detail,omitempty"`
}

// TombstoneOf is the wire form of a ledger tombstone.
func TombstoneOf(t ledger.Tombstone) Tombstone {
	return Tombstone{Shape: t.Shape, Generation: t.Generation, Consumer: t.Consumer, Reason: string(t.Reason),
		Evidence: t.Evidence, Actor: t.Actor, At: t.At.UTC(), FlushedLSN: t.FlushedLSN.String()}
}

// EventOf is the wire form of a journal event; LSN is left out when unset.
func EventOf(e ledger.Event) Event {
	v := Event{Seq: e.Seq, Time: e.Time.UTC(), Kind: e.Kind, Consumer: e.Consumer, Shape: e.Shape,
		Reason: string(e.Reason), Detail: e.Detail}
	if e.LSN != 0 {
		v.LSN = e.LSN.String()
	}
	return v
}

// Counts are the numbers of consumers and shapes by state.
type Counts struct {
	Consumers       int `json:"consumers"`
	ConsumersLive   int `json:"consumers_live"`
	ConsumersStream int `json:"consumers_streaming"`
	ConsumersGone   int `json:"consumers_gone"`
	Shapes          int `json:"shapes"`
	ShapesPending   int `json:"shapes_pending"`
	Tombstones      int `json:"tombstones"`
}

// Status is the answer of GET /v1/status. The slot fields come from
// pg_replication_slots and are empty when Postgres could not be asked
// (SlotError says why).
type Status struct {
	Slot              string  `json:"slot"`
	Streaming         bool    `json:"streaming"`
	ConfirmedFlushLSN string  `json:"confirmed_flush_lsn"`
	SafeFlushLSN      string  `json:"safe_flush_lsn"`
	ReportedFlushLSN  string  `json:"reported_flush_lsn"`
	WALEnd            string  `json:"wal_end"`
	RestartLSN        string  `json:"restart_lsn,omitempty"`
	RetainedBytes     int64   `json:"retained_bytes"`
	WALStatus         string  `json:"wal_status"`
	SlotError         string  `json:"slot_error,omitempty"`
	Counts            Counts  `json:"counts"`
	Holders           []Shape `json:"holders"`
	// KeyOnlyTables lists the tables whose shapes filter on columns that
	// their deletes do not carry (replica identity not FULL): those deletes
	// reach the shapes unfiltered. Empty when there are none; left out when
	// Postgres could not be asked (KeyOnlyError says why).
	KeyOnlyTables []KeyOnlyTable `json:"key_only_tables,omitzero"`
	KeyOnlyError  string         `json:"key_only_tables_error,omitempty"`
}

// KeyOnlyTable is a table whose deletes (and key-changing updates) carry
// only its key, while shapes filter it on other columns.
type KeyOnlyTable struct {
	Table           string   `json:"table"`
	ReplicaIdentity string   `json:"replica_identity"` // default, index or nothing
	Columns         []string `json:"columns"`          // filter columns outside the key
	Shapes          int      `json:"shapes"`           // shapes filtering on one of them
}

// CodeNotReady is 503 while the daemon starts: it waits for Postgres or has
// not opened its ledger file yet, so only /healthz, /readyz and /metrics
// answer. Message says what it waits for; retry later.
const CodeNotReady = "not_ready"

// GCResponse is the answer of POST /v1/debug/gc: the Go heap right after a
// forced garbage collection, so the live memory per shape can be measured
// from outside the process.
type GCResponse struct {
	HeapInuseBytes uint64 `json:"heap_inuse_bytes"` // spans in use after the collection
	HeapAllocBytes uint64 `json:"heap_alloc_bytes"` // live objects after the collection
	HeapObjects    uint64 `json:"heap_objects"`
	SysBytes       uint64 `json:"sys_bytes"` // memory obtained from the OS by the Go runtime
	Shapes         int    `json:"shapes"`    // live shapes when measured
}
