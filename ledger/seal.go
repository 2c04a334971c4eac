package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	bolt "go.etcd.io/bbolt"
)

// Record checksums. bbolt checks the structure of its pages (Tx.Check), not
// the bytes of the values in them: a flipped bit or a stray write inside a
// shape's flushed LSN reads back as a valid, wrong position, and the ledger
// would confirm the slot past transactions the shape never acked (I1).
// From schema version 2 every record is sealed: its value ends with the
// CRC-32C (Castagnoli) of the key and the value before it, big-endian, so a
// record moved to another key fails too. The record encodings themselves do
// not know about it: put seals, get and unseal check and strip.
//
// The one exception is the schema version record, which says whether the
// others are sealed. Damage to it is caught all the same: read as version 1,
// every sealed record carries four bytes its decoder refuses.

const sumLen = 4

// errChecksum is wrapped, with ErrCorrupt, by the error of a record whose
// checksum does not match.
var errChecksum = errors.New("checksum mismatch")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sealedSchema is the first schema version whose records carry checksums.
const sealedSchema = 2

func recordSum(k, v []byte) uint32 {
	return crc32.Update(crc32.Checksum(k, castagnoli), castagnoli, v)
}

// put stores v under k, sealed. Every write of a record goes through it.
func put(b *bolt.Bucket, k, v []byte) error {
	sv := make([]byte, len(v), len(v)+sumLen)
	copy(sv, v)
	return b.Put(k, binary.BigEndian.AppendUint32(sv, recordSum(k, v)))
}

// unseal checks the checksum of a value read from the file and returns the
// record without it. sealed is false for a version-1 file, whose records
// carry none. The error wraps ErrCorrupt and says what was found.
func unseal(k, v []byte, sealed bool) ([]byte, error) {
	if !sealed {
		return v, nil
	}
	if len(v) < sumLen {
		return nil, fmt.Errorf("%w: record of %d bytes is too short for its checksum", ErrCorrupt, len(v))
	}
	rec := v[:len(v)-sumLen]
	if want, got := binary.BigEndian.Uint32(v[len(rec):]), recordSum(k, rec); want != got {
		return nil, fmt.Errorf("%w: %w (stored %08x, computed %08x): the record was changed outside ledgerd",
			ErrCorrupt, errChecksum, want, got)
	}
	return rec, nil
}

// get reads the record under k and checks it; nil without error when there
// is none.
func get(b *bolt.Bucket, k []byte, sealed bool) ([]byte, error) {
	v := b.Get(k)
	if v == nil {
		return nil, nil
	}
	return unseal(k, v, sealed)
}

// upgradeTx seals every record of a version-1 file and records the new
// schema version, in the caller's transaction: either the whole file is
// upgraded or none of it.
func upgradeTx(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		bk := tx.Bucket(name)
		var ks, vs [][]byte
		err := bk.ForEach(func(k, v []byte) error {
			if v == nil {
				return fmt.Errorf("%w: nested bucket %q in %s", ErrCorrupt, k, name)
			}
			if string(name) == string(bucketMeta) && string(k) == string(keySchema) {
				return nil
			}
			ks = append(ks, append([]byte(nil), k...))
			vs = append(vs, append([]byte(nil), v...))
			return nil
		})
		if err != nil {
			return err
		}
		for i := range ks {
			if err := put(bk, ks[i], vs[i]); err != nil {
				return err
			}
		}
	}
	return putSchema(tx)
}
