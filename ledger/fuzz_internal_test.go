package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"math/big"
	"os"
	"reflect"
	"testing"
	"time"
)

// Fuzz targets for everything the ledger parses from outside: LSN text (API
// bodies, flags, files), the records of a ledger file, and the header check
// that runs before bbolt maps a file. make fuzz runs each for a while; go
// test runs their seeds.

// FuzzParseLSN: ParseLSN accepts exactly the Postgres text form, and what it
// accepts prints back to a string it parses to the same position.
func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/16B3748", "16/B374D848", "0/0", "FFFFFFFF/FFFFFFFF", "ffffffff/ffffffff",
		"00000000/00000001", "100000000/0", "0/100000000", "", "/", "0/", "/0", "+1/2", "-1/2", "1/-2", "0x1/2",
		"1_0/2", " 1/2", "1/2 ", "1//2", "1/2/3", "18446744073709551615", "G/0", "\x00/\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		var back LSN
		uerr := back.UnmarshalText([]byte(s))
		if (err == nil) != (uerr == nil) || back != l {
			t.Fatalf("ParseLSN(%q) = %v, %v but UnmarshalText = %v, %v", s, l, err, back, uerr)
		}
		if err != nil {
			return
		}
		again, err := ParseLSN(l.String())
		if err != nil || again != l {
			t.Fatalf("ParseLSN(%q) = %d, its String %q parses to %d, %v", s, l, l.String(), again, err)
		}
		txt, _ := l.MarshalText()
		if string(txt) != l.String() {
			t.Fatalf("MarshalText %q != String %q", txt, l.String())
		}
	})
}

func shapeSeeds() [][]byte {
	in := newInterner()
	return [][]byte{
		encodeShape(&shapeState{consumer: "c", Def: in.def("public.t", 0, ""), gen: 1, start: 99, flushed: 100}),
		encodeShape(&shapeState{consumer: "consumer-1", Def: in.def("public.orders", 16384,
			canonFilter(map[string][]string{"tenant": {"a", "b"}, "region": {"eu"}, "": {""}})),
			gen: math.MaxUint64, start: LSN(math.MaxUint64), flushed: LSN(math.MaxUint64), created: math.MinInt64, lastAck: math.MaxInt64,
			boundAt: LSN(math.MaxUint64)}),
		// The common filter: one column, one value (Def.Only).
		encodeShape(&shapeState{consumer: "c7", Def: in.def("public.t3", 16387,
			canonFilter(map[string][]string{"tenant": {"424242"}})), gen: 1, start: 0x100, flushed: 0x100, boundAt: 0x80}),
		// A filter count of zero written in two bytes: no filter.
		noFilterLong(),
	}
}

// noFilterLong is a record whose filter count, zero, takes two bytes.
func noFilterLong() []byte {
	rec := encodeShape(&shapeState{consumer: "c", Def: &Def{table: "public.t"}, gen: 1})
	return append(rec[:len(rec)-1], 0x80, 0)
}

// FuzzDecodeShape: a shape record decodes or fails with ErrCorrupt, never
// panics, and what decodes encodes back to a record that decodes the same.
func FuzzDecodeShape(f *testing.F) {
	for _, s := range shapeSeeds() {
		f.Add("s", s)
		f.Add("s", s[:len(s)-1])
		f.Add("s", append(s, 0))
	}
	f.Add("s", []byte{1})
	f.Fuzz(func(t *testing.T, id string, v []byte) {
		s, err := decodeShape(id, v, newInterner())
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		again, err := decodeShape(id, encodeShape(s), newInterner())
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if again.gen != s.gen || again.start != s.start || again.flushed != s.flushed || again.created != s.created ||
			again.lastAck != s.lastAck || again.consumer != s.consumer || again.table != s.table ||
			again.relID != s.relID || again.boundAt != s.boundAt ||
			again.filter != s.filter || !reflect.DeepEqual(again.Filter(), s.Filter()) {
			t.Fatalf("round trip changed the shape:\n%+v\n%+v", s, again)
		}
	})
}

// FuzzDecodeConsumer: a consumer record decodes or fails with ErrCorrupt,
// and what decodes encodes back to the same consumer.
func FuzzDecodeConsumer(f *testing.F) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []*Consumer{
		{ID: "c", Lease: "l", Epoch: 1, TTL: time.Second, RegisteredAt: at, LastHeartbeat: at, ExpiresAt: at.Add(time.Second)},
		{ID: "c", Lease: "l", Epoch: math.MaxUint64, TTL: math.MaxInt64, PID: math.MaxInt32, Host: "h", ProcStart: "1",
			Gone: true, GoneReason: ReasonReleased, GoneAt: at, Inventory: []string{}, InventoryAt: at},
		{ID: "c", Inventory: []string{"a", ""}, Streaming: true},
	} {
		f.Add([]byte(c.ID), encodeConsumer(c))
	}
	f.Add([]byte("c"), []byte(`{"id":"c","ttl_ns":-1}`))
	f.Add([]byte("c"), []byte(`{"id":"c","registered_at":9223372036854775807,"expires_at":-9223372036854775808}`))
	f.Fuzz(func(t *testing.T, k, v []byte) {
		c, err := decodeConsumer(k, v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		again, err := decodeConsumer(k, encodeConsumer(c))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip changed the consumer:\n%+v\n%+v", c, again)
		}
	})
}

// FuzzDecodeTombstone: a tombstone record decodes or fails with ErrCorrupt.
func FuzzDecodeTombstone(f *testing.F) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ts := Tombstone{Shape: "s", Generation: math.MaxUint64, Consumer: "c", Reason: ReasonStalled, Evidence: "e",
		Actor: "a", At: at, FlushedLSN: LSN(math.MaxUint64)}
	v, _ := jsonMarshal(ts.rec())
	f.Add(tombKey("s", 1), v)
	f.Add(tombKey("s", 1), []byte(`{"flushed_lsn":"1/2/3"}`))
	f.Fuzz(func(t *testing.T, k, v []byte) {
		ts, err := decodeTomb(k, v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		b, err := jsonMarshal(ts.rec())
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeTomb(k, b)
		if err != nil || again != ts {
			t.Fatalf("round trip changed the tombstone: %+v -> %+v, %v", ts, again, err)
		}
	})
}

// FuzzDecodeEvent: a journal record decodes or fails with ErrCorrupt, and
// readEvent (checksum then decode) never panics.
func FuzzDecodeEvent(f *testing.F) {
	f.Add(u64(1), []byte(`{"t":1,"kind":"acked","shape":"s","lsn":"0/64"}`), false)
	f.Add(u64(math.MaxUint64), []byte(`{"t":-9223372036854775808,"kind":"","lsn":"FFFFFFFF/FFFFFFFF"}`), true)
	f.Add([]byte("k"), []byte(`{}`), false)
	f.Fuzz(func(t *testing.T, k, v []byte, sealed bool) {
		if _, err := readEvent(k, v, sealed); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error does not wrap ErrCorrupt: %v", err)
		}
		e, err := decodeEvent(k, v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if e.Seq != binary.BigEndian.Uint64(k) {
			t.Fatalf("event %d from key %x", e.Seq, k)
		}
	})
}

// FuzzUnseal: a record's checksum is checked whatever the bytes, and a
// record that passes is the one put would write for its key.
func FuzzUnseal(f *testing.F) {
	f.Add([]byte("s"), sealBytes([]byte("s"), []byte("value")))
	f.Add([]byte(""), []byte{})
	f.Add([]byte("k"), []byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		rec, err := unseal(k, v, true)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if !bytes.Equal(sealBytes(k, rec), v) {
			t.Fatalf("unseal accepted %x for key %x", v, k)
		}
		// CRC-32C catches every single-bit error, in the value or the key.
		for i := range min(len(v), 64) {
			w := append([]byte(nil), v...)
			w[i] ^= 1 << (i % 8)
			if _, err := unseal(k, w, true); err == nil {
				t.Fatalf("a flipped bit %d of %x passed", i, v)
			}
		}
		for i := range min(len(k), 64) {
			kk := append([]byte(nil), k...)
			kk[i] ^= 1 << (i % 8)
			if _, err := unseal(kk, v, true); err == nil {
				t.Fatalf("a flipped bit %d of key %x passed", i, k)
			}
		}
	})
}

func sealBytes(k, v []byte) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), v...), recordSum(k, v))
}

// fixMetaSums rewrites the checksum of each bbolt meta page in b whose magic
// is right, so that the fuzzer explores the fields the check reads rather
// than stopping at the checksum.
func fixMetaSums(b []byte) {
	fix := func(off int) {
		if off < 0 || len(b) < off+boltPageHeader+boltMetaLen {
			return
		}
		m := b[off+boltPageHeader:]
		if binary.LittleEndian.Uint32(m) != boltMagic {
			return
		}
		h := fnv.New64a()
		_, _ = h.Write(m[:boltMetaSumOff])
		binary.LittleEndian.PutUint64(m[boltMetaSumOff:], h.Sum64())
	}
	fix(0)
	fix(4096)
	if len(b) >= boltPageHeader+boltMetaLen {
		fix(int(binary.LittleEndian.Uint32(b[boltPageHeader+8:]) & 0x7fffffff))
	}
}

// FuzzCheckBoltHeader: the check before bbolt maps a file never panics,
// fails only with ErrCorrupt, and never passes a file shorter than the pages
// its newest valid meta page claims.
func FuzzCheckBoltHeader(f *testing.F) {
	if b, err := os.ReadFile("../testdata/ledger/v1.db"); err == nil {
		f.Add(b[:2*4096], int64(len(b)))
		f.Add(b[:2*4096], int64(2*4096))
		f.Add(b[:100], int64(len(b)))
	}
	f.Add([]byte{}, int64(0))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		fixMetaSums(b)
		size = max(size, int64(len(b)))
		err := checkBoltHeader(bytes.NewReader(b), size)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		// The newest valid meta page (the first one's page size locates
		// the second) names the pages the file must hold.
		const n = boltPageHeader + boltMetaLen
		var best boltMeta
		found := false
		pageSize := int64(4096)
		if len(b) >= n {
			if m, ok := parseBoltMeta(b); ok {
				best, found, pageSize = m, true, int64(m.pageSize)
			}
		}
		if int64(len(b)) >= pageSize+n {
			if m, ok := parseBoltMeta(b[pageSize:]); ok && (!found || m.txid > best.txid) {
				best, found = m, true
			}
		}
		if !found {
			return
		}
		need := new(big.Int).Mul(new(big.Int).SetUint64(best.hwm), big.NewInt(int64(best.pageSize)))
		if need.Cmp(big.NewInt(size)) > 0 {
			t.Fatalf("passed a file of %d bytes whose meta page claims %d pages of %d (%s bytes)", size, best.hwm, best.pageSize, need)
		}
	})
}
