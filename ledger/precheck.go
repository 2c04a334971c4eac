package ledger

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
)

// bbolt's on-disk meta page, as far as this check needs it: a 16-byte page
// header, then magic, version, page size, flags, root bucket (pgid, sequence),
// freelist pgid, high-water pgid, txid and an FNV-64a checksum of the 56
// bytes before it. bbolt stores it in the machine's byte order; ledgerd is
// built for little-endian platforms.
const (
	boltMagic       = 0xED0CDAED
	boltPageHeader  = 16
	boltMetaSumOff  = 56
	boltMetaLen     = 64
	boltMetaMinPage = 1024
)

// precheckSize refuses a file shorter than the pages its newest valid meta
// page says it has. bbolt trusts that count and would read (through its
// memory map) past the end of a truncated file, which faults and, once the
// fault is turned into a panic, leaves the file open and locked. Files whose
// meta pages are unreadable are left to bbolt's own checks.
func precheckSize(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bbolt reports it (or creates the file)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return nil
	}
	return checkBoltHeader(f, st.Size())
}

// checkBoltHeader is precheckSize on the file's contents: r holds size
// bytes.
func checkBoltHeader(r io.ReaderAt, size int64) error {
	first := make([]byte, boltPageHeader+boltMetaLen)
	if _, err := r.ReadAt(first, 0); err != nil {
		return fmt.Errorf("%w: %d bytes is too short for a bbolt file", ErrCorrupt, size)
	}
	m0, ok0 := parseBoltMeta(first)
	pageSize := int64(4096)
	if ok0 {
		pageSize = int64(m0.pageSize)
	}
	var best boltMeta
	found := false
	if ok0 {
		best, found = m0, true
	}
	second := make([]byte, boltPageHeader+boltMetaLen)
	if _, err := r.ReadAt(second, pageSize); err == nil {
		if m1, ok := parseBoltMeta(second); ok && (!found || m1.txid > best.txid) {
			best, found = m1, true
		}
	}
	if !found {
		return nil
	}
	// A page count too large to multiply out is as truncated as can be.
	if best.hwm > uint64(math.MaxInt64/int64(best.pageSize)) {
		return fmt.Errorf("%w: the file is truncated: %d bytes, its metadata claims %d pages of %d bytes",
			ErrCorrupt, size, best.hwm, best.pageSize)
	}
	if need := int64(best.hwm) * int64(best.pageSize); size < need {
		return fmt.Errorf("%w: the file is truncated: %d bytes, its metadata needs %d (%d pages of %d bytes)",
			ErrCorrupt, size, need, best.hwm, best.pageSize)
	}
	return nil
}

type boltMeta struct {
	pageSize uint32
	hwm      uint64
	txid     uint64
}

func parseBoltMeta(page []byte) (boltMeta, bool) {
	m := page[boltPageHeader:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:boltMetaSumOff])
	if h.Sum64() != le.Uint64(m[boltMetaSumOff:]) {
		return boltMeta{}, false
	}
	ps := le.Uint32(m[8:])
	if ps < boltMetaMinPage || ps&(ps-1) != 0 {
		return boltMeta{}, false
	}
	return boltMeta{pageSize: ps, hwm: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, true
}
