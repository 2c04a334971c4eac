package ledger

import "time"

// Reason says why a shape was evicted or a consumer is gone.
type Reason string

// Eviction reasons (docs/api.md, "Eviction reasons").
const (
	ReasonLeaseExpired         Reason = "lease_expired"
	ReasonProcessGone          Reason = "process_gone"
	ReasonNotInInventory       Reason = "not_in_inventory"
	ReasonStalled              Reason = "stalled"
	ReasonWALBudget            Reason = "wal_budget"
	ReasonReleased             Reason = "released"
	ReasonManual               Reason = "manual"
	ReasonExpiredBeforeRestart Reason = "expired_before_restart"
	// ReasonRelationChanged: the shape's table was renamed or dropped, or a
	// column its filter names was dropped; the shape would never get another
	// change, so it is evicted rather than left live and deaf.
	ReasonRelationChanged Reason = "relation_changed"
)

// ConsumerSpec is what a consumer gives when it registers.
type ConsumerSpec struct {
	ID        string
	TTL       time.Duration // 0 = Config.DefaultTTL
	PID       int
	ProcStart string // process start time as the host reports it (pid reuse check)
	Host      string
}

// Consumer is a leased client process.
type Consumer struct {
	ID            string
	Lease         string // fencing token: a new random value on every Register; set only in what Register returns, never stored (only its hash is)
	Epoch         uint64 // bumps on every Register of this id
	TTL           time.Duration
	PID           int
	ProcStart     string
	Host          string
	RegisteredAt  time.Time
	LastHeartbeat time.Time
	ExpiresAt     time.Time // LastHeartbeat + TTL; meaningless while Streaming. Views give when the lease ends by the wall clock now: it is judged on the monotonic clock, so a wall clock step moves it along
	Streaming     bool      // an open change stream holds the lease
	Gone          bool
	GoneReason    Reason
	GoneAt        time.Time
	Inventory     []string  // last heartbeat's shape list (nil = none sent); shared with the ledger: read it, never change it
	InventoryAt   time.Time // when Inventory was received
	PrevHeartbeat time.Time // the heartbeat call before the last one
	HeartbeatAt   time.Time // the last heartbeat call (or the registration); stream opens and closes do not count

	leaseEnd time.Duration // Ledger.mono reading when the lease ends; memory only (the file keeps ExpiresAt)
	leaseIdx int           // 1 + position in Ledger.leases, 0 when not in it

	leaseHash  leaseHash // SHA-256 of the lease token: all the ledger keeps of it
	leaseClear bool      // read from a record holding the token in the clear (an older file); Open rewrites it
}

// ShapeSpec is the definition of a shape.
type ShapeSpec struct {
	ID       string
	Consumer string
	Table    string
	// Filter maps a column to the values it may hold. In the shapes the
	// ledger returns it is shared by every shape with the same definition:
	// read it, never change it.
	Filter map[string][]string
	// RelID binds the shape to its table's relation OID, resolved when the
	// shape is created (0: not bound yet; shapes recorded before binding
	// existed are bound by the reconciler's catalog check). Routing is by
	// this identity, so a table dropped and created again under the same
	// name is another relation, and a rename is noticed.
	RelID uint32
	// BoundAt is the server WAL position when RelID was resolved: the
	// binding reflects the catalog as of there, so a relation message of a
	// transaction that commits before it (a stream behind the catalog)
	// cannot contradict it.
	BoundAt LSN
	// Def is the shape's definition as the ledger holds it (table,
	// relation and filter), set in the shapes the ledger returns and
	// ignored in a spec given to it. Views (Shape, Shapes, ShapesOf...)
	// carry Filter as well; ShapeSpecs, EachShapeSpec and the answers of
	// PutShapes carry only Def, whose Filter builds the map.
	Def *Def
}

// Shape is a shape's durable record joined with its in-memory tracking state.
type Shape struct {
	ShapeSpec
	Generation   uint64    // 1 on first create; bumped when the id is created again after a tombstone
	StartLSN     LSN       // one below the processed position when created; the shape gets transactions with commit LSN > StartLSN
	FlushedLSN   LSN       // ack position (applied in memory; durable at the next group commit)
	LastSent     LSN       // commit LSN of the last transaction handed to it (memory)
	PendingLSN   LSN       // smallest unacked commit LSN, 0 when not pending
	PendingSince time.Time // when PendingLSN was tracked
	CreatedAt    time.Time
	LastAckAt    time.Time
}

// Tombstone records an eviction. It outlives the shape for
// Config.TombstoneRetention so that acks naming the shape get the reason and
// the id cannot come back at the same generation (I4).
type Tombstone struct {
	Shape      string
	Generation uint64
	Consumer   string
	Reason     Reason
	Evidence   string
	Actor      string
	At         time.Time
	FlushedLSN LSN
}

// Event is one entry of the journal that inspect reads.
type Event struct {
	Seq      uint64
	Time     time.Time
	Kind     string
	Consumer string
	Shape    string
	LSN      LSN
	Reason   Reason
	Detail   string
}

// Event kinds.
const (
	EventRegistered   = "registered"
	EventReleased     = "released"
	EventShapeCreated = "shape_created"
	// EventShapesCreated sums up the shapes one call created; single
	// creations are not journaled (the shape's record says when).
	EventShapesCreated = "shapes_created"
	EventAcked         = "acked"
	EventLeaseExpired  = "lease_expired"
	EventChallenged    = "challenged"
	EventEvicted       = "evicted"
	EventRestarted     = "restarted"
	EventSlotAdvanced  = "slot_advanced"
	EventTimeline      = "timeline_changed"
	EventLeaseExtended = "lease_extended"
	EventConsumerGone  = "consumer_gone"
	// EventSlotAdopted: the file was opened with Config.AdoptSlot against a
	// slot whose history it does not hold.
	EventSlotAdopted = "slot_adopted"
	// EventSlotCreated: the slot was created for this ledger (SlotCreated).
	EventSlotCreated = "slot_created"
)

// Meta is the file's header record.
type Meta struct {
	SchemaVersion int
	Identity      Identity
	CreatedAt     time.Time
	LastFlush     LSN       // last flush position offered for reporting (I6: never decreases)
	Position      LSN       // end of the last processed transaction when LastFlush was written
	Tick          time.Time // last reconcile liveness tick (I5)
	CleanShutdown time.Time // zero while a daemon has the file open or after a crash
	OpenedAt      time.Time // last Open
}

// State is a read-only view of a whole ledger file (Load).
type State struct {
	Meta       Meta
	Consumers  []Consumer
	Shapes     []Shape
	Tombstones []Tombstone
	Events     []Event
	// Problems lists the journal records Load could not read and left out
	// of Events (the journal is history; the state above is whole).
	Problems []Problem
}

// Problem is one violation found by Verify.
type Problem struct {
	Check   string // short name of the check, e.g. "shape_owner"
	Subject string // the shape or consumer concerned, if any
	Detail  string
}

func (p Problem) String() string {
	if p.Subject == "" {
		return p.Check + ": " + p.Detail
	}
	return p.Check + " " + p.Subject + ": " + p.Detail
}
