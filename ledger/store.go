package ledger

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the version of the file layout written by this package.
// A file with a newer version is refused (ErrSchema): an older ledgerd must
// not rewrite state it does not understand. Version 2 added a checksum to
// every record (seal.go); Open upgrades a version-1 file, Load and Verify
// read one as it is.
const SchemaVersion = 2

// Bucket names. Keys are big-endian fixed width wherever order matters, so
// cursors iterate in order (journal by sequence, tombstones by id then
// generation).
var (
	bucketMeta        = []byte("meta")
	bucketConsumers   = []byte("consumers")
	bucketShapes      = []byte("shapes")
	bucketTombstones  = []byte("tombstones")
	bucketJournal     = []byte("journal")
	bucketGenerations = []byte("generations") // id -> highest generation of compacted tombstones (I4)

	allBuckets = [][]byte{bucketMeta, bucketConsumers, bucketShapes, bucketTombstones, bucketJournal, bucketGenerations}

	keySchema = []byte("schema")
	keyMeta   = []byte("meta")
)

// guard runs f with faults on the memory-mapped file turned into panics and
// every panic turned into ErrCorrupt. bbolt trusts the pages it reads; a
// truncated or damaged file would otherwise crash the process instead of
// failing with an error that names the file.
func guard(f func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	return f()
}

// ---- shapes: hot fields in a fixed binary header so a group commit can
// patch the flushed LSN in place and Open can decode a million records fast.

const (
	shapeRecVersion = 1
	offGen          = 1
	offStart        = 9
	offFlushed      = 17
	offCreated      = 25
	offLastAck      = 33
	shapeHeaderLen  = 41
)

func encodeShape(s *shapeState) []byte {
	n := shapeHeaderLen + 2*binary.MaxVarintLen64 + len(s.consumer) + len(s.table) + 1 + len(s.filter) +
		1 + 2*binary.MaxVarintLen64 // relation binding
	b := make([]byte, shapeHeaderLen, n)
	b[0] = shapeRecVersion
	binary.BigEndian.PutUint64(b[offGen:], s.gen)
	binary.BigEndian.PutUint64(b[offStart:], uint64(s.start))
	binary.BigEndian.PutUint64(b[offFlushed:], uint64(s.flushed))
	binary.BigEndian.PutUint64(b[offCreated:], uint64(s.created))
	binary.BigEndian.PutUint64(b[offLastAck:], uint64(s.lastAck))
	b = appendString(b, s.consumer)
	b = appendString(b, s.table)
	b = appendDefFilter(b, s.filter)
	if s.relID != 0 {
		b = append(b, tagRelation)
		b = binary.AppendUvarint(b, uint64(s.relID))
		b = binary.AppendUvarint(b, uint64(s.boundAt))
	}
	return b
}

// tagRelation starts the optional relation binding at the end of a shape
// record (relation OID, then the WAL position it was resolved at, both
// uvarints). Records written before binding existed end after the filter.
const tagRelation = 'R'

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeShape decodes a shape record; strings are copied out of the mmap.
// in deduplicates repeated strings (consumer ids, table names) and
// definitions: a record whose definition was read before costs no
// allocation but the shape and its id.
func decodeShape(id string, v []byte, in *interner) (*shapeState, error) {
	if len(v) < shapeHeaderLen || v[0] != shapeRecVersion {
		return nil, fmt.Errorf("%w: shape %q: bad record header (%d bytes)", ErrCorrupt, id, len(v))
	}
	s := &shapeState{
		id:      id,
		gen:     binary.BigEndian.Uint64(v[offGen:]),
		start:   LSN(binary.BigEndian.Uint64(v[offStart:])),
		flushed: LSN(binary.BigEndian.Uint64(v[offFlushed:])),
		created: int64(binary.BigEndian.Uint64(v[offCreated:])),
		lastAck: int64(binary.BigEndian.Uint64(v[offLastAck:])),
		heapIdx: -1,
	}
	r := reader{b: v[shapeHeaderLen:]}
	s.consumer = in.str(r.bytes())
	table := r.bytes()
	filter := r.b
	if err := readFilter(&r); err != nil {
		return nil, fmt.Errorf("%w: shape %q: %v", ErrCorrupt, id, err)
	}
	filter = filter[:len(filter)-len(r.b)]
	if n, _ := binary.Uvarint(filter); n == 0 {
		filter = nil // no filter
	}
	var relID uint64
	if r.err == nil && len(r.b) > 0 && r.b[0] == tagRelation {
		r.b = r.b[1:]
		relID = r.uvarint()
		s.boundAt = LSN(r.uvarint())
		if relID == 0 || relID > math.MaxUint32 {
			r.err = fmt.Errorf("relation id %d out of range", relID)
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: shape %q: %v", ErrCorrupt, id, r.err)
	}
	if filter == nil {
		s.Def = in.def(in.str(table), uint32(relID), "")
	} else {
		s.Def = in.defBytes(in.str(table), uint32(relID), filter)
	}
	return s, nil
}

// readFilter checks a filter as canonFilter encodes it and moves past it.
// The definition keeps the filter in this encoding (Def).
func readFilter(r *reader) error {
	nf := r.uvarint()
	if nf == 0 || r.err != nil {
		return r.err
	}
	if nf > uint64(len(r.b)) {
		r.err = fmt.Errorf("filter count %d exceeds record", nf)
		return r.err
	}
	for i := uint64(0); i < nf && r.err == nil; i++ {
		r.bytes()
		nv := r.uvarint()
		if nv > uint64(len(r.b)) {
			r.err = errors.New("value count exceeds record")
			break
		}
		for j := uint64(0); j < nv && r.err == nil; j++ {
			r.bytes()
		}
	}
	return r.err
}

// reader decodes length-prefixed fields, checking every length first.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("field of %d bytes exceeds record", n)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// ---- keys

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// tombKey orders tombstones by shape id, then generation. Shape ids never
// contain a NUL byte (validID), so the separator keeps ids apart.
func tombKey(id string, gen uint64) []byte {
	k := make([]byte, 0, len(id)+9)
	k = append(k, id...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, gen)
}

func tombPrefix(id string) []byte { return append([]byte(id), 0) }

func putMeta(tx *bolt.Tx, m Meta) error {
	b, err := json.Marshal(m.rec())
	if err != nil {
		return err
	}
	return put(tx.Bucket(bucketMeta), keyMeta, b)
}

// readMeta reads the meta record. ok is false for a file without one (new).
func readMeta(tx *bolt.Tx) (m Meta, ok bool, err error) {
	mb := tx.Bucket(bucketMeta)
	if mb == nil {
		return Meta{}, false, nil
	}
	sv := mb.Get(keySchema)
	if sv == nil {
		return Meta{}, false, nil
	}
	if len(sv) != 4 {
		return Meta{}, false, fmt.Errorf("%w: schema version record of %d bytes", ErrCorrupt, len(sv))
	}
	m.SchemaVersion = int(binary.BigEndian.Uint32(sv))
	if m.SchemaVersion > SchemaVersion || m.SchemaVersion < 1 {
		return m, true, fmt.Errorf("%w %d: this ledgerd reads version %d; run the ledgerd that wrote the file, or restore one this version reads from a backup",
			ErrSchema, m.SchemaVersion, SchemaVersion)
	}
	var r metaRec
	mv, err := get(mb, keyMeta, m.SchemaVersion >= sealedSchema)
	if err != nil {
		return m, true, fmt.Errorf("meta record: %w", err)
	}
	if err := json.Unmarshal(mv, &r); err != nil {
		return m, true, fmt.Errorf("%w: meta record: %v", ErrCorrupt, err)
	}
	m.Identity = r.Identity
	m.CreatedAt, m.LastFlush, m.Position = fromNanos(r.CreatedAt), r.LastFlush, r.Position
	m.Tick, m.CleanShutdown, m.OpenedAt = fromNanos(r.Tick), fromNanos(r.CleanShutdown), fromNanos(r.OpenedAt)
	return m, true, nil
}

// putSchema writes the schema version record, the one record not sealed: it
// says whether the others are.
func putSchema(tx *bolt.Tx) error {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], SchemaVersion)
	return tx.Bucket(bucketMeta).Put(keySchema, b[:])
}

// checkBuckets reports a missing bucket of an initialised file as corruption.
func checkBuckets(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("%w: bucket %q is missing", ErrCorrupt, name)
		}
	}
	return nil
}
