package stream

import (
	"errors"
	"fmt"
)

// Sentinel errors. Check returns them wrapped in a *CheckError that names the
// fix; test for them with errors.Is.
var (
	// ErrWALLevel is returned when the server's wal_level is not logical.
	ErrWALLevel = errors.New("wal_level is not logical")
	// ErrPrivilege is returned when the role may not stream changes or
	// create what it was asked to create.
	ErrPrivilege = errors.New("insufficient privileges")
	// ErrPassword is returned when Postgres refuses the password of the
	// connection string (SQLSTATE 28P01).
	ErrPassword = errors.New("password authentication failed")
	// ErrRoleMissing is returned when the role of the connection string
	// does not exist (SQLSTATE 28000, "role ... does not exist").
	ErrRoleMissing = errors.New("role does not exist")
	// ErrDatabaseMissing is returned when the database of the connection
	// string does not exist (SQLSTATE 3D000).
	ErrDatabaseMissing = errors.New("database does not exist")
	// ErrSlotMissing is returned when the slot does not exist and creating
	// it was not asked for.
	ErrSlotMissing = errors.New("replication slot does not exist")
	// ErrSlotPlugin is returned when the slot is not a logical slot using
	// pgoutput.
	ErrSlotPlugin = errors.New("replication slot does not use pgoutput")
	// ErrSlotDatabase is returned when the slot belongs to another database
	// than the one connected to.
	ErrSlotDatabase = errors.New("replication slot belongs to another database")
	// ErrSlotActive is returned when another process streams from the slot.
	ErrSlotActive = errors.New("replication slot is in use by another process")
	// ErrSlotInvalidated is returned when Postgres has invalidated the slot
	// (wal_status = lost): the WAL it needed was removed.
	ErrSlotInvalidated = errors.New("replication slot is invalidated")
	// ErrPublicationMissing is returned when the publication does not exist
	// and creating it was not asked for.
	ErrPublicationMissing = errors.New("publication does not exist")
	// ErrConfig is returned by New for an unusable Config.
	ErrConfig = errors.New("invalid stream configuration")
	// ErrDecode is returned for a pgoutput message that cannot be decoded.
	ErrDecode = errors.New("malformed pgoutput message")
)

// CheckError is a failed preflight check: what is wrong and what the
// operator should do about it.
type CheckError struct {
	Err    error  // one of the sentinels above
	Detail string // what was found, e.g. "slot \"ledgerd\" is active in pid 4242"
	Fix    string // what to do about it
	// Terminal is set when retrying cannot help until an operator acts; Run
	// returns such errors instead of reconnecting.
	Terminal bool
}

func (e *CheckError) Error() string {
	msg := e.Err.Error()
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Fix != "" {
		msg += " (fix: " + e.Fix + ")"
	}
	return msg
}

func (e *CheckError) Unwrap() error { return e.Err }

// IsTerminal reports whether err is a misconfiguration that reconnecting
// cannot cure (wal_level, privileges, a wrong password, a missing role or
// database, missing or invalidated slot, missing publication, wrong plugin or
// database). A slot in use by another process is not terminal: that process
// may go away, and Run keeps retrying; nor is a server that refuses
// connections or is starting up.
func IsTerminal(err error) bool {
	var ce *CheckError
	return errors.As(err, &ce) && ce.Terminal
}

// DecodeError is a pgoutput message that could not be decoded.
type DecodeError struct {
	Type   byte   // the message type byte, 0 if the message was empty
	Reason string // what was wrong
}

func (e *DecodeError) Error() string {
	if e.Type == 0 {
		return fmt.Sprintf("%v: %s", ErrDecode, e.Reason)
	}
	return fmt.Sprintf("%v %q: %s", ErrDecode, e.Type, e.Reason)
}

func (e *DecodeError) Unwrap() error { return ErrDecode }
