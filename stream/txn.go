package stream

import (
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// Op is the kind of a row change.
type Op string

// The row change kinds pgoutput reports.
const (
	OpInsert   Op = "insert"
	OpUpdate   Op = "update"
	OpDelete   Op = "delete"
	OpTruncate Op = "truncate"
)

// Kind says how a column value was sent.
type Kind uint8

// Column value kinds, as pgoutput marks them.
const (
	KindText      Kind = iota // Value holds the text form
	KindNull                  // SQL NULL
	KindUnchanged             // unchanged TOASTed value: not sent, keep the old one
)

// TupleKind says what an old tuple holds, as pgoutput marks it.
type TupleKind uint8

// Old tuple kinds.
const (
	// TupleNone: no old tuple (inserts; updates that left the key alone
	// under replica identity DEFAULT or USING INDEX; any update or delete
	// under NOTHING).
	TupleNone TupleKind = iota
	// TupleKey ('K'): only the replica identity's key columns. The other
	// columns are absent from the tuple: their values are unknown, not
	// NULL.
	TupleKey
	// TupleFull ('O'): the whole old row (REPLICA IDENTITY FULL).
	TupleFull
)

func (k TupleKind) String() string {
	switch k {
	case TupleKey:
		return "key"
	case TupleFull:
		return "full"
	default:
		return "none"
	}
}

// Column is one column of a decoded row, in the relation's column order.
type Column struct {
	Name  string
	Kind  Kind
	Value string // text form; empty unless Kind is KindText
}

// Change is one row change of a transaction.
//
// Inserts carry New; updates carry New and, when the replica identity is FULL
// or the key changed, Old; deletes carry Old. OldKind says what Old holds:
// with TupleKey (replica identity DEFAULT or USING INDEX) Old holds only the
// key columns, and a column missing from it is absent, never NULL, so that
// routing treats it as unknown (a match) rather than as a NULL that matches
// no filter (I1). A TRUNCATE of several tables becomes one Change per table,
// in the order Postgres listed them.
type Change struct {
	Op    Op
	Table string // "schema.table"
	// RelID is the pgoutput relation OID of the table: its identity, which a
	// rename keeps and a drop and create again under the same name does not.
	RelID   uint32
	New     []Column
	Old     []Column
	OldKind TupleKind // what Old holds; TupleNone when Old is nil
}

// Relation is a relation message received inside a transaction: the
// definition of a table as of that point of the WAL. Postgres sends one
// before a relation's first change in a session and again before the next
// change after its definition changed (a rename, a column added or
// dropped), so it is where DDL on a table shows in the stream.
type Relation struct {
	ID      uint32   // relation OID
	Table   string   // "schema.table"
	Columns []string // in column order
}

// Message is a logical decoding message emitted with pg_logical_emit_message
// inside the transaction (transactional messages only).
type Message struct {
	LSN     ledger.LSN
	Prefix  string
	Content []byte
}

// Txn is one committed transaction as decoded from pgoutput, or one piece
// of it.
//
// CommitLSN identifies the transaction (pgoutput Begin.FinalLSN, equal to
// Commit.CommitLSN); EndLSN is the position just past its commit record, the
// position that may be confirmed once the transaction is no longer needed.
//
// A transaction larger than the Decoder's ChunkBytes is handed over in
// pieces as it is decoded, so that no transaction is held whole in memory:
// every piece carries the transaction's Xid, CommitLSN and CommitTime, the
// changes, messages and relation messages decoded since the previous piece,
// Part (1 for the first) and More (set on every piece but the last). Only
// the last piece carries EndLSN. The zero Part and More describe a whole
// transaction in one piece.
type Txn struct {
	Xid        uint32
	CommitLSN  ledger.LSN
	EndLSN     ledger.LSN
	CommitTime time.Time
	Changes    []Change
	Messages   []Message
	// Relations are the relation messages of the transaction, in stream
	// order; every one precedes the first change of its relation in the
	// transaction.
	Relations []Relation
	// Part numbers the pieces of one transaction from 1; 0 is the same as
	// 1 (a whole transaction built by hand).
	Part int
	// More is set when further pieces of the transaction follow: it was
	// not committed yet as far as this piece goes, and EndLSN is zero.
	More bool
}

// First reports whether txn is the first (or only) piece of its
// transaction.
func (t *Txn) First() bool { return t.Part <= 1 }
