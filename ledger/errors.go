package ledger

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Match them with errors.Is; the typed errors below unwrap
// to them.
var (
	// ErrNotFound is returned when a consumer or shape id is unknown.
	ErrNotFound = errors.New("ledger: not found")
	// ErrConsumerExists is returned by Register while a live, unexpired lease
	// holds the consumer id. Wait for it to expire or release it first.
	ErrConsumerExists = errors.New("ledger: consumer id is held by a live lease")
	// ErrWrongLease is returned when a lease token does not match the
	// consumer's current lease (a stale or foreign process: fencing).
	ErrWrongLease = errors.New("ledger: wrong or stale lease token")
	// ErrShapeConflict is returned by PutShape when the id exists with another
	// definition or owner.
	ErrShapeConflict = errors.New("ledger: shape exists with another definition or owner")
	// ErrAckBeyondSent is returned (inside *AckError) for an ack past the last
	// transaction handed to the shape: the consumer claims to have flushed
	// something it never received.
	ErrAckBeyondSent = errors.New("ledger: ack beyond the last transaction sent")
	// ErrGone is returned (inside *GoneError) for a shape or consumer that was
	// evicted or whose lease is gone (I4).
	ErrGone = errors.New("ledger: gone")
	// ErrForeign is returned (inside *ForeignError) when the file is bound to
	// another Postgres system or slot.
	ErrForeign = errors.New("ledger: file belongs to another system or slot")
	// ErrCorrupt is returned, wrapping the cause, when the file is not a
	// ledger, is truncated or holds records that cannot be decoded.
	ErrCorrupt = errors.New("ledger: file is corrupt or not a ledger")
	// ErrLocked is returned by Load and Verify when a running daemon holds the
	// file's lock.
	ErrLocked = errors.New("ledger: file is locked by a running ledgerd; use inspect -url to ask the daemon instead")
	// ErrChanged is returned by ExpireConsumerIf when the consumer is no
	// longer as observed (registered again, heartbeated, stream opened or
	// closed), and by EvictIf when the shape is no longer as observed (created
	// again, or the reason for its eviction no longer holds): the decision is
	// stale; look again.
	ErrChanged = errors.New("ledger: consumer changed since it was observed")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("ledger: closed")
	// ErrSchema is returned, wrapped, when the file was written by a newer
	// ledgerd whose schema this version does not know.
	ErrSchema = errors.New("ledger: unknown schema version")
	// ErrSlotHistory is returned (inside *SlotError) when the file does not
	// hold the history of the slot it is opened against (I1, I4).
	ErrSlotHistory = errors.New("ledger: file does not hold the slot's history")
	// ErrEmptyFile is returned when the ledger file exists and has 0 bytes:
	// whatever it held is gone, tombstones included, so starting afresh in it
	// would let evicted shapes come back (I4).
	ErrEmptyFile = errors.New("ledger: file is empty (0 bytes)")
)

// GoneError reports that a shape (or, with Shape empty, a consumer) was
// evicted or lost its lease. The daemon maps it to 410 Gone (I4).
type GoneError struct {
	Shape    string
	Consumer string
	Reason   Reason
	Evidence string
	At       time.Time
}

func (e *GoneError) Error() string {
	what := "consumer " + e.Consumer
	if e.Shape != "" {
		what = "shape " + e.Shape
	}
	msg := fmt.Sprintf("%s is gone (%s", what, e.Reason)
	if e.Evidence != "" {
		msg += ": " + e.Evidence
	}
	if !e.At.IsZero() {
		msg += ", at " + e.At.UTC().Format(time.RFC3339)
	}
	return msg + "); register again or create the shape again"
}

// Is makes errors.Is(err, ErrGone) true.
func (e *GoneError) Is(target error) bool { return target == ErrGone }

// AckError reports an ack past the last transaction sent to the shape.
type AckError struct {
	Shape    string
	LSN      LSN
	LastSent LSN
}

func (e *AckError) Error() string {
	return fmt.Sprintf("ack %s for shape %s is beyond the last transaction sent to it (%s); ack only positions that were delivered",
		e.LSN, e.Shape, e.LastSent)
}

// Unwrap returns ErrAckBeyondSent.
func (e *AckError) Unwrap() error { return ErrAckBeyondSent }

// ForeignError reports a ledger file bound to another Postgres system
// identifier or slot. Using it would confirm positions of one slot with the
// state of another (I1), so Open refuses it.
type ForeignError struct {
	Path string
	Have Identity // recorded in the file
	Want Identity // asked for by the caller
}

func (e *ForeignError) Error() string {
	return fmt.Sprintf("ledger %s belongs to system %s slot %q, but this ledgerd runs against system %s slot %q: "+
		"point -db at the ledger file of this system and slot (a new file for a slot that exists needs -adopt-slot)",
		e.Path, e.Have.SystemID, e.Have.Slot, e.Want.SystemID, e.Want.Slot)
}

// Unwrap returns ErrForeign.
func (e *ForeignError) Unwrap() error { return ErrForeign }

// ErrInvalid is returned, wrapped, for malformed arguments (empty ids, ids
// with NUL bytes, a shape without a table).
var ErrInvalid = errors.New("ledger: invalid argument")

// SlotMismatch says how a ledger file and its slot disagree.
type SlotMismatch string

// Slot mismatches.
const (
	// SlotNewFile: a new (or 0-byte) file against a slot that exists.
	SlotNewFile SlotMismatch = "new_file"
	// SlotFileBehind: the slot is confirmed past the file's last reported
	// flush: the file is older than the slot, or someone else moved it.
	SlotFileBehind SlotMismatch = "file_behind"
	// SlotMissing: the file tracks live shapes but the slot does not exist.
	SlotMissing SlotMismatch = "slot_missing"
)

// SlotError reports a ledger file that does not hold the history of its
// slot. Going on would confirm transactions that no consumer received (I1)
// and forget evictions (I4), so Open refuses unless Config.AdoptSlot.
type SlotError struct {
	Path          string
	Slot          string
	Mismatch      SlotMismatch
	FileFlush     LSN // the file's last reported flush
	SlotConfirmed LSN // the slot's confirmed_flush_lsn
	LiveShapes    int // shapes the file tracks
}

// adoptCost is what -adopt-slot costs, said in every SlotError.
const adoptCost = "every consumer must then resynchronise its shapes from scratch"

func (e *SlotError) Error() string {
	switch e.Mismatch {
	case SlotNewFile:
		return fmt.Sprintf("ledger %s is new, but slot %q already exists (confirmed_flush_lsn %s) and its history "+
			"(shapes, acks, evictions) is not in this file: if the ledger file was lost or moved, restore it from a "+
			"backup or point -db at it; to start a new ledger on this slot anyway, run with -adopt-slot (%s)",
			e.Path, e.Slot, e.SlotConfirmed, adoptCost)
	case SlotFileBehind:
		if e.FileFlush == 0 && e.LiveShapes == 0 {
			return fmt.Sprintf("ledger %s never recorded a position of slot %q, which is confirmed at %s: the file's "+
				"first start was interrupted before it could (right after creating the slot), or the file is not this "+
				"slot's; if nothing else used the slot, run with -adopt-slot once: it costs nothing here, as no consumer "+
				"has used this ledger; otherwise point -db at the slot's ledger file", e.Path, e.Slot, e.SlotConfirmed)
		}
		return fmt.Sprintf("ledger %s last reported flush %s, but slot %q is confirmed at %s, past it: the file is "+
			"older than the slot (restored from a backup?) or another client moved the slot, and what happened in "+
			"between is not in this file: point -db at the current ledger file; to go on with this one anyway, run "+
			"with -adopt-slot (%s)", e.Path, e.FileFlush, e.Slot, e.SlotConfirmed, adoptCost)
	default:
		return fmt.Sprintf("ledger %s tracks %d live shapes of slot %q, but the slot does not exist: a new slot "+
			"starts at the current WAL end, so changes since %s would never reach those shapes: check -pg-url and "+
			"-slot; to create a new slot anyway, run with -create-slot -adopt-slot (%s)",
			e.Path, e.LiveShapes, e.Slot, e.FileFlush, adoptCost)
	}
}

// Unwrap returns ErrSlotHistory.
func (e *SlotError) Unwrap() error { return ErrSlotHistory }
