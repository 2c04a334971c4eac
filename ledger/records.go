package ledger

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

// JSON records (consumers, tombstones, events, meta): written rarely
// compared with acks, and readable by hand with any bbolt browser.

type tombRec struct {
	Shape      string `json:"shape"`
	Generation uint64 `json:"generation"`
	Consumer   string `json:"consumer"`
	Reason     Reason `json:"reason"`
	Evidence   string `json:"evidence,omitempty"`
	Actor      string `json:"actor,omitempty"`
	At         int64  `json:"at"`
	FlushedLSN LSN    `json:"flushed_lsn"`
}

func (t Tombstone) rec() tombRec {
	return tombRec{t.Shape, t.Generation, t.Consumer, t.Reason, t.Evidence, t.Actor, t.At.UnixNano(), t.FlushedLSN}
}

func (r tombRec) tombstone() Tombstone {
	return Tombstone{r.Shape, r.Generation, r.Consumer, r.Reason, r.Evidence, r.Actor, time.Unix(0, r.At).UTC(), r.FlushedLSN}
}

func decodeTomb(k, v []byte) (Tombstone, error) {
	var r tombRec
	if err := json.Unmarshal(v, &r); err != nil {
		return Tombstone{}, fmt.Errorf("%w: tombstone %q: %v", ErrCorrupt, k, err)
	}
	return r.tombstone(), nil
}

type consumerRec struct {
	ID            string   `json:"id"`
	Lease         string   `json:"lease,omitempty"` // the token in the clear: only in files of older versions, read and hashed, never written
	LeaseSHA256   string   `json:"lease_sha256,omitempty"`
	Epoch         uint64   `json:"epoch"`
	TTL           int64    `json:"ttl_ns"`
	PID           int      `json:"pid,omitempty"`
	ProcStart     string   `json:"proc_start,omitempty"`
	Host          string   `json:"host,omitempty"`
	RegisteredAt  int64    `json:"registered_at"`
	LastHeartbeat int64    `json:"last_heartbeat"`
	ExpiresAt     int64    `json:"expires_at"`
	Streaming     bool     `json:"streaming,omitempty"`
	Gone          bool     `json:"gone,omitempty"`
	GoneReason    Reason   `json:"gone_reason,omitempty"`
	GoneAt        int64    `json:"gone_at,omitempty"`
	Inventory     []string `json:"inventory,omitempty"`
	HasInventory  bool     `json:"has_inventory,omitempty"`
	InventoryAt   int64    `json:"inventory_at,omitempty"`
	PrevHeartbeat int64    `json:"prev_heartbeat,omitempty"`
	HeartbeatAt   int64    `json:"heartbeat_at,omitempty"`
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func encodeConsumer(c *Consumer) []byte {
	r := consumerRec{
		ID: c.ID, LeaseSHA256: c.leaseHash.String(), Epoch: c.Epoch, TTL: int64(c.TTL), PID: c.PID, ProcStart: c.ProcStart, Host: c.Host,
		RegisteredAt: nanos(c.RegisteredAt), LastHeartbeat: nanos(c.LastHeartbeat), ExpiresAt: nanos(c.ExpiresAt),
		Streaming: c.Streaming, Gone: c.Gone, GoneReason: c.GoneReason, GoneAt: nanos(c.GoneAt),
		Inventory: c.Inventory, HasInventory: c.Inventory != nil, InventoryAt: nanos(c.InventoryAt),
		PrevHeartbeat: nanos(c.PrevHeartbeat), HeartbeatAt: nanos(c.HeartbeatAt),
	}
	b, _ := json.Marshal(r)
	return b
}

func decodeConsumer(k, v []byte) (*Consumer, error) {
	var r consumerRec
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("%w: consumer %q: %v", ErrCorrupt, k, err)
	}
	if r.ID != string(k) || r.TTL < 0 {
		return nil, fmt.Errorf("%w: consumer %q: record names %q or has a negative ttl", ErrCorrupt, k, r.ID)
	}
	lh, clear, err := storedLease(r.LeaseSHA256, r.Lease)
	if err != nil {
		return nil, fmt.Errorf("%w: consumer %q: %v", ErrCorrupt, k, err)
	}
	c := &Consumer{
		ID: r.ID, leaseHash: lh, leaseClear: clear, Epoch: r.Epoch, TTL: time.Duration(r.TTL), PID: r.PID, ProcStart: r.ProcStart, Host: r.Host,
		RegisteredAt: fromNanos(r.RegisteredAt), LastHeartbeat: fromNanos(r.LastHeartbeat), ExpiresAt: fromNanos(r.ExpiresAt),
		Streaming: r.Streaming, Gone: r.Gone, GoneReason: r.GoneReason, GoneAt: fromNanos(r.GoneAt),
		Inventory: r.Inventory, InventoryAt: fromNanos(r.InventoryAt), PrevHeartbeat: fromNanos(r.PrevHeartbeat),
		HeartbeatAt: fromNanos(r.HeartbeatAt),
	}
	if r.HasInventory && c.Inventory == nil {
		c.Inventory = []string{}
	}
	return c, nil
}

type eventRec struct {
	Time     int64  `json:"t"`
	Kind     string `json:"kind"`
	Consumer string `json:"consumer,omitempty"`
	Shape    string `json:"shape,omitempty"`
	LSN      LSN    `json:"lsn,omitempty"`
	Reason   Reason `json:"reason,omitempty"`
	Detail   string `json:"detail,omitempty"`
}

func decodeEvent(k, v []byte) (Event, error) {
	var r eventRec
	if len(k) != 8 {
		return Event{}, fmt.Errorf("%w: journal key of %d bytes", ErrCorrupt, len(k))
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return Event{}, fmt.Errorf("%w: journal event %d: %v", ErrCorrupt, binary.BigEndian.Uint64(k), err)
	}
	return Event{Seq: binary.BigEndian.Uint64(k), Time: fromNanos(r.Time), Kind: r.Kind, Consumer: r.Consumer,
		Shape: r.Shape, LSN: r.LSN, Reason: r.Reason, Detail: r.Detail}, nil
}

type metaRec struct {
	Identity      Identity `json:"identity"`
	CreatedAt     int64    `json:"created_at"`
	LastFlush     LSN      `json:"last_flush"`
	Position      LSN      `json:"position"`
	Tick          int64    `json:"tick,omitempty"`
	CleanShutdown int64    `json:"clean_shutdown,omitempty"`
	OpenedAt      int64    `json:"opened_at,omitempty"`
}

func (m Meta) rec() metaRec {
	return metaRec{m.Identity, nanos(m.CreatedAt), m.LastFlush, m.Position, nanos(m.Tick), nanos(m.CleanShutdown), nanos(m.OpenedAt)}
}
