package stream

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/ledgerd/ledgerd/ledger"
)

// Decoder turns a session's pgoutput (protocol version 1) messages into
// committed transactions. It keeps the relation cache (relations by id, as
// Postgres sends them before first use in each session) and the transaction
// being assembled. A Decoder belongs to one replication session: start a new
// one after a reconnect, since Postgres sends the relations again.
//
// Malformed input never panics: lengths are checked before the third-party
// parser (or the decoder's own reading of Begin, Commit and row changes)
// runs, and a panic inside either is turned into a *DecodeError.
type Decoder struct {
	relations map[uint32]*relation
	txn       *Txn
	skip      bool // the open transaction was already handed over: drop it
	// SkipThrough drops transactions whose commit LSN is at or below it
	// (already handed over before a reconnect). Zero skips nothing.
	SkipThrough ledger.LSN
	// ChunkBytes, when positive, hands an open transaction over in pieces
	// (Txn.Part, Txn.More) once the changes decoded since the last piece
	// hold about this many bytes, so that memory stays bounded whatever
	// the transaction's size. Zero hands every transaction over whole.
	ChunkBytes int

	size int // bytes of the changes in txn, as counted against ChunkBytes
	part int // pieces of the open transaction handed over so far
}

type relation struct {
	name    string // "schema.table"
	columns []string
	key     []bool // columns[i] is part of the replica identity key (relation message flag 1)
}

// NewDecoder returns a Decoder with an empty relation cache.
func NewDecoder() *Decoder {
	return &Decoder{relations: make(map[uint32]*relation)}
}

// InTxn reports whether a transaction is open (Begin seen, Commit not yet).
func (d *Decoder) InTxn() bool { return d.txn != nil }

// Decode consumes one pgoutput message (the payload of one XLogData). It
// returns the transaction (or its last piece) when msg is its Commit, a
// piece of it when ChunkBytes is set and the changes decoded since the
// last piece reached it, and nil otherwise (or when the transaction is
// skipped, see SkipThrough). Non-transactional logical messages are
// ignored.
func (d *Decoder) Decode(msg []byte) (*Txn, error) {
	switch {
	case len(msg) == 0:
	case msg[0] == 'B' || msg[0] == 'C' || msg[0] == 'I' || msg[0] == 'U' || msg[0] == 'D':
		return d.decodeRow(msg)
	}
	m, err := parse(msg)
	if err != nil {
		return nil, err
	}
	switch m := m.(type) {
	case *pglogrepl.RelationMessage:
		rel := &relation{name: m.Namespace + "." + m.RelationName, columns: make([]string, len(m.Columns)),
			key: make([]bool, len(m.Columns))}
		for i, c := range m.Columns {
			rel.columns[i] = c.Name
			rel.key[i] = c.Flags&1 != 0
		}
		d.relations[m.RelationID] = rel
		if d.txn != nil && !d.skip {
			d.txn.Relations = append(d.txn.Relations, Relation{ID: m.RelationID, Table: rel.name, Columns: rel.columns})
		}
		return nil, nil
	case *pglogrepl.TruncateMessage:
		if err := d.inTxn(msg); err != nil {
			return nil, err
		}
		for _, id := range m.RelationIDs {
			rel, ok := d.relations[id]
			if !ok {
				return nil, decodeErr(msg, "truncate of unknown relation %d", id)
			}
			if !d.skip {
				d.txn.Changes = append(d.txn.Changes, Change{Op: OpTruncate, Table: rel.name, RelID: id})
				d.size += changeBytes + len(rel.name)
			}
		}
		return d.piece(nil)
	case *pglogrepl.LogicalDecodingMessage:
		if !m.Transactional {
			return nil, nil
		}
		if err := d.inTxn(msg); err != nil {
			return nil, err
		}
		if !d.skip {
			d.txn.Messages = append(d.txn.Messages, Message{
				LSN:     ledger.LSN(m.LSN),
				Prefix:  m.Prefix,
				Content: append([]byte(nil), m.Content...), // m.Content aliases the receive buffer
			})
		}
		return nil, nil
	case *pglogrepl.TypeMessage, *pglogrepl.OriginMessage:
		return nil, nil
	default:
		return nil, decodeErr(msg, "unexpected message %T", m)
	}
}

// decodeRow decodes the messages of every transaction, Begin, Commit and
// the row changes, straight from the bytes once checkLengths passed them,
// rather than through pglogrepl's parser: that one allocates a message, a
// tuple and each of its columns and values, about a dozen allocations for
// a single-row transaction that need none. A panic (a message
// checkLengths let through that it should not have) is an error, as with
// the parser.
func (d *Decoder) decodeRow(msg []byte) (txn *Txn, err error) {
	if err := checkLengths(msg); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			txn, err = nil, decodeErr(msg, "decoder panic: %v", r)
		}
	}()
	be := binary.BigEndian
	switch msg[0] {
	case 'B': // final LSN, commit time, xid
		xid := be.Uint32(msg[17:])
		if d.txn != nil {
			return nil, decodeErr(msg, "begin of xid %d inside open xid %d", xid, d.txn.Xid)
		}
		d.txn = &Txn{Xid: xid, CommitLSN: ledger.LSN(be.Uint64(msg[1:])), CommitTime: pgTime(msg[9:])}
		d.skip = d.SkipThrough != 0 && d.txn.CommitLSN <= d.SkipThrough
		d.size, d.part = 0, 0
		return nil, nil
	case 'C': // flags, commit LSN, end LSN, commit time
		commit := ledger.LSN(be.Uint64(msg[2:]))
		txn := d.txn
		if txn == nil {
			return nil, decodeErr(msg, "commit %s without begin", commit)
		}
		if commit != txn.CommitLSN {
			return nil, decodeErr(msg, "commit LSN %s does not match begin's final LSN %s", commit, txn.CommitLSN)
		}
		d.txn = nil
		if d.skip {
			d.skip = false
			return nil, nil
		}
		txn.EndLSN = ledger.LSN(be.Uint64(msg[10:]))
		txn.CommitTime = pgTime(msg[18:])
		txn.Part = d.part + 1
		return txn, nil
	case 'I': // relation id, 'N', new tuple
		return d.piece(d.change(msg, OpInsert, 6, 0, 0))
	case 'U': // relation id, then 'K' or 'O' and the old tuple, then 'N' and the new tuple
		if marker := msg[5]; marker == 'K' || marker == 'O' {
			return d.piece(d.change(msg, OpUpdate, skipTuple(msg, 6)+1, 6, marker))
		}
		return d.piece(d.change(msg, OpUpdate, 6, 0, 0))
	default: // 'D': relation id, 'K' or 'O', the old tuple
		return d.piece(d.change(msg, OpDelete, 0, 6, msg[5]))
	}
}

// pgTime is a Postgres timestamp (microseconds since 2000-01-01 UTC), as
// pglogrepl reads it.
func pgTime(b []byte) time.Time {
	const y2k = 946684800 * 1000000 // microseconds from the Unix epoch
	return time.Unix(0, (y2k+int64(binary.BigEndian.Uint64(b)))*1000)
}

// skipTuple returns the offset after the tuple at msg[off:].
func skipTuple(msg []byte, off int) int {
	n := int(binary.BigEndian.Uint16(msg[off:]))
	off += 2
	for range n {
		kind := msg[off]
		off++
		if kind == 't' || kind == 'b' {
			off += 4 + int(binary.BigEndian.Uint32(msg[off:]))
		}
	}
	return off
}

// changeBytes is what a decoded change holds beside its names and values,
// as counted against ChunkBytes.
const changeBytes = 96

// piece hands the open transaction's changes over as a piece (Txn.More)
// once they reach ChunkBytes, and starts the next piece.
func (d *Decoder) piece(err error) (*Txn, error) {
	if err != nil || d.ChunkBytes <= 0 || d.size < d.ChunkBytes || d.skip {
		return nil, err
	}
	t := d.txn
	d.part++
	t.Part, t.More = d.part, true
	d.txn = &Txn{Xid: t.Xid, CommitLSN: t.CommitLSN, CommitTime: t.CommitTime}
	d.size = 0
	return t, nil
}

func (d *Decoder) inTxn(msg []byte) error {
	if d.txn == nil {
		return decodeErr(msg, "change outside a transaction")
	}
	return nil
}

// change appends a row change of the relation whose id follows the
// message type. newAt and oldAt are the offsets of the new and old tuples
// in msg, zero when absent; oldType is the old tuple's marker: 'K' for the
// key columns only, 'O' for the whole row.
func (d *Decoder) change(msg []byte, op Op, newAt, oldAt int, oldType uint8) error {
	if err := d.inTxn(msg); err != nil {
		return err
	}
	relID := binary.BigEndian.Uint32(msg[1:])
	rel, ok := d.relations[relID]
	if !ok {
		return decodeErr(msg, "change of relation %d sent before its relation message", relID)
	}
	if d.skip {
		return nil
	}
	c := Change{Op: op, Table: rel.name, RelID: relID}
	var err error
	if newAt > 0 {
		if c.New, err = rel.row(msg, newAt, false); err != nil {
			return err
		}
	}
	keyOnly := oldType == pglogrepl.UpdateMessageTupleTypeKey
	if oldAt > 0 {
		if c.Old, err = rel.row(msg, oldAt, keyOnly); err != nil {
			return err
		}
	}
	switch {
	case c.Old == nil:
	case keyOnly:
		c.OldKind = TupleKey
	default:
		c.OldKind = TupleFull
	}
	d.txn.Changes = append(d.txn.Changes, c)
	d.size += changeBytes + len(c.Table) + rowBytes(c.New) + rowBytes(c.Old)
	return nil
}

func rowBytes(cols []Column) int {
	n := 0
	for _, c := range cols {
		n += 40 + len(c.Name) + len(c.Value)
	}
	return n
}

// row decodes the tuple at msg[off:] in the relation's column order. In a
// key-only tuple Postgres sends the columns outside the replica identity
// key as NULL placeholders: they are left out of the row (absent, value
// unknown), so nothing downstream mistakes them for a NULL the row holds
// (I1). The values are substrings of one string, the tuple's bytes: one
// allocation for all of them.
func (r *relation) row(msg []byte, off int, keyOnly bool) ([]Column, error) {
	be := binary.BigEndian
	n := int(be.Uint16(msg[off:]))
	if n != len(r.columns) {
		return nil, decodeErr(msg, "tuple of %s has %d columns, its relation message %d", r.name, n, len(r.columns))
	}
	start := off + 2
	vals := string(msg[start:skipTuple(msg, off)])
	row := make([]Column, 0, n)
	p := 0 // in vals, and at start+p in msg
	for i := range n {
		kind := vals[p]
		p++
		col := Column{Name: r.columns[i]}
		switch kind {
		case 't', 'b':
			l := int(be.Uint32(msg[start+p:]))
			p += 4
			col.Kind = KindText
			col.Value = vals[p : p+l]
			p += l
		case 'n':
			if keyOnly && !r.key[i] {
				continue
			}
			col.Kind = KindNull
		case 'u':
			col.Kind = KindUnchanged
		}
		row = append(row, col)
	}
	return row, nil
}

// parse checks msg's lengths and runs pglogrepl's parser on it, turning a
// panic into an error: a malformed message from the wire (or a fuzzer) must
// not bring the daemon down.
func parse(msg []byte) (m pglogrepl.Message, err error) {
	if err := checkLengths(msg); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, decodeErr(msg, "parser panic: %v", r)
		}
	}()
	m, err = pglogrepl.Parse(msg)
	if err != nil {
		return nil, decodeErr(msg, "%v", err)
	}
	return m, nil
}

func decodeErr(msg []byte, format string, args ...any) error {
	var t byte
	if len(msg) > 0 {
		t = msg[0]
	}
	return &DecodeError{Type: t, Reason: fmt.Sprintf(format, args...)}
}

// checkLengths walks the structure of a pgoutput v1 message and verifies
// that every length and count fits in the message, so the parser never reads
// past the end nor allocates for a length the message does not hold.
func checkLengths(msg []byte) error {
	if len(msg) == 0 {
		return decodeErr(msg, "empty message")
	}
	r := &reader{b: msg[1:]}
	switch msg[0] {
	case 'B': // final LSN, commit time, xid
		r.skip(8 + 8 + 4)
	case 'C': // flags, commit LSN, end LSN, commit time
		r.skip(1 + 8 + 8 + 8)
	case 'O': // origin LSN, name
		r.skip(8)
		r.cstring()
	case 'Y': // type oid, namespace, name
		r.skip(4)
		r.cstring()
		r.cstring()
	case 'R': // relation id, namespace, name, replica identity, columns
		r.skip(4)
		r.cstring()
		r.cstring()
		r.skip(1)
		n := r.uint16()
		for i := 0; i < n && r.err == nil; i++ {
			r.skip(1) // flags
			r.cstring()
			r.skip(4 + 4) // type oid, type modifier
		}
	case 'I':
		r.skip(4)
		r.expect('N')
		r.tuple()
	case 'U':
		r.skip(4)
		switch r.byte() {
		case 'K', 'O':
			r.tuple()
			r.expect('N')
			r.tuple()
		case 'N':
			r.tuple()
		default:
			r.fail("update tuple marker not K, O or N")
		}
	case 'D':
		r.skip(4)
		switch r.byte() {
		case 'K', 'O':
			r.tuple()
		default:
			r.fail("delete tuple marker not K or O")
		}
	case 'T': // relation count, options, relation ids
		n := r.uint32()
		r.skip(1)
		if n > len(r.b)/4 {
			r.fail("truncate of more relations than the message holds")
		}
		r.skip(4 * n)
	case 'M': // flags, LSN, prefix, content
		r.skip(1 + 8)
		r.cstring()
		r.skip(r.uint32())
	default:
		return decodeErr(msg, "unsupported message type (protocol version 1 expected)")
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Sprintf("%d trailing bytes", len(r.b)))
	}
	if r.err != nil {
		return decodeErr(msg, "%s", r.err.Error())
	}
	return nil
}

// reader consumes a message front to back, remembering the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(why string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s", why)
	}
	r.b = nil
}

func (r *reader) skip(n int) {
	if r.err != nil {
		return
	}
	if n < 0 || n > len(r.b) {
		r.fail("message too short")
		return
	}
	r.b = r.b[n:]
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail("message too short")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) expect(c byte) {
	if got := r.byte(); r.err == nil && got != c {
		r.fail(fmt.Sprintf("expected %q, got %q", c, got))
	}
}

func (r *reader) uint16() int {
	if r.err != nil || len(r.b) < 2 {
		r.fail("message too short")
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return int(v)
}

func (r *reader) uint32() int {
	if r.err != nil || len(r.b) < 4 {
		r.fail("message too short")
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	if uint64(v) > uint64(len(r.b)) {
		// Every count or length read here bounds bytes that follow.
		r.fail(fmt.Sprintf("length %d beyond the end of the message", v))
		return 0
	}
	return int(v)
}

func (r *reader) cstring() {
	if r.err != nil {
		return
	}
	for i, c := range r.b {
		if c == 0 {
			r.b = r.b[i+1:]
			return
		}
	}
	r.fail("unterminated string")
}

// tuple checks a TupleData: column count, then per column a kind byte and,
// for text or binary values, a length and that many bytes.
func (r *reader) tuple() {
	n := r.uint16()
	for i := 0; i < n && r.err == nil; i++ {
		switch r.byte() {
		case 'n', 'u':
		case 't', 'b':
			r.skip(r.uint32())
		default:
			r.fail("unknown tuple column kind")
		}
	}
}
