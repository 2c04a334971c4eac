package ledger_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/internal/clocktest"
	"github.com/ledgerd/ledgerd/ledger"
	bolt "go.etcd.io/bbolt"
)

// The record format of schema version 2: every value but the schema version
// ends with the CRC-32C (Castagnoli) of the key and the value before it,
// big-endian. The tests spell it out so that a change of format is a
// deliberate one.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func seal(k, v []byte) []byte {
	sum := crc32.Update(crc32.Checksum(k, castagnoli), castagnoli, v)
	return binary.BigEndian.AppendUint32(append([]byte(nil), v...), sum)
}

func unseal(t *testing.T, k, v []byte) []byte {
	t.Helper()
	if len(v) < 4 || !bytes.Equal(seal(k, v[:len(v)-4]), v) {
		t.Fatalf("record %q has no valid checksum", k)
	}
	return v[:len(v)-4]
}

// ackedLedger builds a closed ledger with one consumer and one shape "s"
// acked at 0/64, processed up to 0/6E.
func ackedLedger(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := ledger.Open(testConfig(path, newClock()))
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, l, "c", time.Minute)
	mustShapes(t, l, "c", "s")
	l.Track(100, 110, []string{"s"})
	mustAck(t, l, "s", 100)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestChecksumCatchesAChangedFlushedLSN: 8 bytes of a shape's flushed LSN
// changed on disk (bbolt checks the structure of its pages, not the bytes of
// a value) are caught: Verify names the record, Open and Load refuse the
// file, and nothing is written to it. Without the checksum the ledger would
// confirm the slot past transactions the shape never acked (I1).
func TestChecksumCatchesAChangedFlushedLSN(t *testing.T) {
	path := ackedLedger(t)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// In a bbolt leaf page a value follows its key: "s", then the shape
	// record (version 1, generation 1, start, flushed at offset 17).
	var hdr []byte
	hdr = append(hdr, 's', 1)
	hdr = binary.BigEndian.AppendUint64(hdr, 1)
	n := 0
	for i := bytes.Index(b, hdr); i >= 0; {
		off := i + 1 + 17
		if binary.BigEndian.Uint64(b[off:]) == 100 {
			binary.BigEndian.PutUint64(b[off:], 0x7FFFFFFF)
			n++
		}
		j := bytes.Index(b[i+1:], hdr)
		if j < 0 {
			break
		}
		i += 1 + j
	}
	if n == 0 {
		t.Fatal("the shape record was not found in the file")
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	probs, err := ledger.Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range probs {
		found = found || (p.Check == "checksum" && strings.Contains(p.Subject, "s"))
	}
	if !found {
		t.Fatalf("verify found %v, want a checksum problem on shape s", probs)
	}
	openMustFail(t, path, ledger.ErrCorrupt)
	if _, err := ledger.Load(path); !errors.Is(err, ledger.ErrCorrupt) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("load: %v, want ErrCorrupt naming the checksum", err)
	}
}

// TestVerifyFlushedBeyondPosition: a shape flushed past the processed
// position (a well-formed record, valid checksum) acks transactions that
// were never processed: verify reports it.
func TestVerifyFlushedBeyondPosition(t *testing.T) {
	path := ackedLedger(t)
	editBolt(t, path, func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte("shapes"))
		v := append([]byte(nil), unseal(t, []byte("s"), bk.Get([]byte("s")))...)
		binary.BigEndian.PutUint64(v[17:], 500)
		return bk.Put([]byte("s"), seal([]byte("s"), v))
	})
	probs, err := ledger.Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(probs) != 1 || probs[0].Check != "flushed_beyond_position" || probs[0].Subject != "s" {
		t.Fatalf("verify found %v, want flushed_beyond_position on s", probs)
	}
}

// TestUnreadableJournalRecord: one journal record that does not decode (or
// fails its checksum) is a problem verify reports, not a file nothing can
// read: Load leaves it out and says so, the other events are there.
func TestUnreadableJournalRecord(t *testing.T) {
	for name, value := range map[string]func(k []byte) []byte{
		"bad checksum":  func(k []byte) []byte { return []byte(`{"t":1,"kind":"acked"}xxxx`) },
		"not json":      func(k []byte) []byte { return seal(k, []byte("{")) },
		"wrong key len": nil,
	} {
		t.Run(name, func(t *testing.T) {
			path := ackedLedger(t)
			editBolt(t, path, func(tx *bolt.Tx) error {
				bk := tx.Bucket([]byte("journal"))
				if value == nil {
					return bk.Put([]byte("k"), seal([]byte("k"), []byte(`{"t":1,"kind":"acked"}`)))
				}
				k, _ := bk.Cursor().First()
				return bk.Put(k, value(k))
			})
			st, err := ledger.Load(path)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if len(st.Problems) != 1 || st.Problems[0].Check != "journal" {
				t.Errorf("load problems %v, want the journal record", st.Problems)
			}
			if !slices.Contains(kinds(st.Events), ledger.EventAcked) {
				t.Errorf("the readable events are gone: %v", kinds(st.Events))
			}
			probs, err := ledger.Verify(path)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if len(probs) != 1 || probs[0].Check != "journal" {
				t.Errorf("verify found %v, want one journal problem", probs)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeFromVersion1: a file written by a version-1 ledgerd
// (testdata/ledger/v1.db: consumers, shapes with a filter, an ack, a
// tombstone, a compacted one, the journal) reads read-only as it is, without
// a write; Open upgrades it in one transaction, after which every record
// carries its checksum, the state is the same and the file verifies clean.
func TestUpgradeFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	copyFile(t, "../testdata/ledger/v1.db", path)
	before := fileSum(t, path)
	old, err := ledger.Load(path)
	if err != nil {
		t.Fatalf("load of a version-1 file: %v", err)
	}
	if probs, err := ledger.Verify(path); err != nil || len(probs) > 0 {
		t.Fatalf("verify of a version-1 file: %v %v", probs, err)
	}
	if fileSum(t, path) != before {
		t.Fatal("Load or Verify of a version-1 file changed it")
	}
	if old.Meta.SchemaVersion != 1 || len(old.Consumers) != 2 || len(old.Shapes) != 3 || len(old.Tombstones) != 1 {
		t.Fatalf("version-1 file read as %+v", old)
	}

	clk := clocktest.New(old.Meta.Tick)
	l, err := ledger.Open(testConfig(path, clk))
	if err != nil {
		t.Fatalf("open of a version-1 file: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	checkBolt(t, path)
	if probs, err := ledger.Verify(path); err != nil || len(probs) > 0 {
		t.Fatalf("verify after the upgrade: %v %v", probs, err)
	}
	st, err := ledger.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Meta.SchemaVersion != 2 {
		t.Errorf("schema version after the upgrade: %d, want 2", st.Meta.SchemaVersion)
	}
	if st.Meta.LastFlush != old.Meta.LastFlush || st.Meta.Identity != old.Meta.Identity {
		t.Errorf("meta changed by the upgrade: %+v, was %+v", st.Meta, old.Meta)
	}
	// The restart rules ran on the upgraded state: consumer "gone" had
	// expired before the file's last tick, so its shape is evicted now; the
	// rest is as it was.
	shapes := map[string]ledger.Shape{}
	for _, sh := range st.Shapes {
		shapes[sh.ID] = sh
	}
	for _, sh := range old.Shapes {
		got, ok := shapes[sh.ID]
		if sh.ID == "gone-1" {
			if ok {
				t.Errorf("shape gone-1 of an expired consumer is live after the upgrade")
			}
			continue
		}
		if got.FlushedLSN != sh.FlushedLSN || got.Generation != sh.Generation || got.Table != sh.Table ||
			len(got.Filter) != len(sh.Filter) || got.Consumer != sh.Consumer {
			t.Errorf("shape %s after the upgrade: %+v, was %+v", sh.ID, got, sh)
		}
	}
	for i, c := range old.Consumers {
		if got := st.Consumers[i]; got.ID != c.ID || got.Lease != c.Lease || got.TTL != c.TTL {
			t.Errorf("consumer %s after the upgrade: %+v, was %+v", c.ID, got, c)
		}
	}
	if len(st.Tombstones) != 2 || !slices.Contains(st.Tombstones, old.Tombstones[0]) {
		t.Errorf("tombstones after the upgrade: %+v, want %+v and gone-1's", st.Tombstones, old.Tombstones)
	}
	if len(st.Events) <= len(old.Events) {
		t.Errorf("journal after the upgrade holds %d events, was %d", len(st.Events), len(old.Events))
	}
	// Every record of every bucket carries its checksum, and a shape id
	// compacted before the upgrade still comes back at a new generation (I4).
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if string(name) == "meta" && string(k) == "schema" {
					if binary.BigEndian.Uint32(v) != 2 {
						t.Errorf("schema record %x", v)
					}
					return nil
				}
				unseal(t, k, v)
				return nil
			})
		})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	l = openAt(t, testConfig(path, clk))
	sh, created, err := l.PutShape(ledger.ShapeSpec{ID: "old", Consumer: "orders", Table: "public.t"})
	if err != nil || !created || sh.Generation != 3 {
		t.Fatalf("shape old created again after the upgrade: %+v %v %v, want generation 3", sh, created, err)
	}
}
