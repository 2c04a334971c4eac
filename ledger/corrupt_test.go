package ledger_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	bolt "go.etcd.io/bbolt"
)

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// closedLedger builds a ledger file with a few consumers, shapes, acks and
// evictions, closes it and returns its path.
func closedLedger(t *testing.T, shapes int) string {
	t.Helper()
	clk := newClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := ledger.Open(testConfig(path, clk))
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, l, "c", time.Minute)
	ids := make([]string, shapes)
	for i := range ids {
		ids[i] = fmt.Sprintf("shape-%s%06d", strings.Repeat("x", i%7), i)
	}
	mustShapes(t, l, "c", ids...)
	l.Track(100, 110, ids)
	for _, id := range ids[:len(ids)/2] {
		mustAck(t, l, id, 100)
	}
	if _, err := l.Evict(ids[len(ids)-1], ledger.ReasonManual, "test", "test"); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	checkBolt(t, path)
	return path
}

// openMustFail opens path, expects an error matching target, and checks the
// file was not changed.
func openMustFail(t *testing.T, path string, target error) error {
	t.Helper()
	before := fileSum(t, path)
	l, err := ledger.Open(testConfig(path, newClock()))
	if err == nil {
		_ = l.Close()
		t.Fatalf("open of a bad file succeeded")
	}
	if !errors.Is(err, target) {
		t.Fatalf("open: %v, want %v", err, target)
	}
	if fileSum(t, path) != before {
		t.Fatal("a failed open changed the file")
	}
	return err
}

func TestOpenForeignSystemOrSlotRefused(t *testing.T) {
	path := closedLedger(t, 3)
	before := fileSum(t, path)
	for _, id := range []ledger.Identity{
		{SystemID: "999", Timeline: 1, Database: "app", Slot: "ledgerd"},
		{SystemID: testIdentity.SystemID, Timeline: 1, Database: "app", Slot: "other"},
	} {
		cfg := testConfig(path, newClock())
		cfg.Identity = id
		_, err := ledger.Open(cfg)
		var fe *ledger.ForeignError
		if !errors.As(err, &fe) || !errors.Is(err, ledger.ErrForeign) {
			t.Fatalf("open with %+v: %v, want *ForeignError", id, err)
		}
		msg := err.Error()
		for _, want := range []string{testIdentity.SystemID, id.SystemID, id.Slot, "-db", "-adopt-slot"} {
			if !strings.Contains(msg, want) {
				t.Fatalf("error %q does not name %q", msg, want)
			}
		}
	}
	if fileSum(t, path) != before {
		t.Fatal("a refused open changed the file")
	}
	checkBolt(t, path)
}

func TestOpenNotABoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "garbage.db")
	junk := make([]byte, 64<<10)
	rand.New(rand.NewSource(1)).Read(junk)
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	err := openMustFail(t, path, ledger.ErrCorrupt)
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("error %q does not name the file", err)
	}
	if _, err := ledger.Load(path); !errors.Is(err, ledger.ErrCorrupt) {
		t.Fatalf("load: %v, want ErrCorrupt", err)
	}
	if _, err := ledger.Verify(path); !errors.Is(err, ledger.ErrCorrupt) {
		t.Fatalf("verify: %v, want ErrCorrupt", err)
	}
	// A text file too short to hold bbolt's header.
	if err := os.WriteFile(path, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	openMustFail(t, path, ledger.ErrCorrupt)
}

func TestOpenTruncatedFile(t *testing.T) {
	path := closedLedger(t, 1000)
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{len(full) / 2, len(full) / 4, 3 * 4096, 4096 + 100} {
		p := filepath.Join(t.TempDir(), "truncated.db")
		if err := os.WriteFile(p, full[:size], 0o600); err != nil {
			t.Fatal(err)
		}
		err := openMustFail(t, p, ledger.ErrCorrupt)
		t.Logf("truncated to %d of %d bytes: %v", size, len(full), err)
		if _, err := ledger.Load(p); !errors.Is(err, ledger.ErrCorrupt) {
			t.Fatalf("load of a truncated file: %v, want ErrCorrupt", err)
		}
	}
}

func TestOpenDamagedPages(t *testing.T) {
	path := closedLedger(t, 1000)
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(2))
	refused := 0
	const rounds = 40
	for round := 0; round < rounds; round++ {
		b := append([]byte(nil), full...)
		// Overwrite a few pages after the two meta pages with noise.
		for i := 0; i < 3; i++ {
			pg := 2 + rng.Intn(len(b)/4096-2)
			rng.Read(b[pg*4096 : pg*4096+4096])
		}
		p := filepath.Join(t.TempDir(), "damaged.db")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		// Open runs bbolt's consistency check: a damaged file is refused
		// with ErrCorrupt, never loaded silently, never a crash, and never
		// left locked (Load below would then time out with ErrLocked). Noise
		// on free pages only is harmless: then the file must verify clean.
		if probs, err := ledger.Verify(p); err == nil && len(probs) == 0 {
			l, err := ledger.Open(testConfig(p, newClock()))
			if err != nil {
				t.Fatalf("open of a file that verifies clean: %v", err)
			}
			_ = l.Close()
			continue
		}
		l, err := ledger.Open(testConfig(p, newClock()))
		if err == nil {
			_ = l.Close()
			t.Fatal("a file with verify problems was opened")
		}
		refused++
		if !errors.Is(err, ledger.ErrCorrupt) {
			t.Fatalf("open of a damaged file: %v, want ErrCorrupt", err)
		}
		if _, err := ledger.Load(p); err != nil && !errors.Is(err, ledger.ErrCorrupt) {
			t.Fatalf("load of a damaged file: %v, want ErrCorrupt", err)
		}
		if _, err := ledger.Verify(p); err != nil && !errors.Is(err, ledger.ErrCorrupt) {
			t.Fatalf("verify of a damaged file: %v, want problems or ErrCorrupt", err)
		}
	}
	if refused == 0 {
		t.Fatal("no damaged file was refused: the damage missed every live page")
	}
	t.Logf("%d of %d damaged files refused with ErrCorrupt", refused, rounds)
}

// editBolt changes a closed ledger file directly through bbolt.
func editBolt(t *testing.T, path string, f func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(f); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenGarbageInBuckets(t *testing.T) {
	cases := map[string]func(tx *bolt.Tx) error{
		"shape record": func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("shapes")).Put([]byte("x"), []byte("garbage"))
		},
		"shape record with a lying length": func(tx *bolt.Tx) error {
			v := make([]byte, 41, 60)
			v[0] = 1
			v = append(v, 0xff, 0xff, 0xff, 0x0f, 'a')
			return tx.Bucket([]byte("shapes")).Put([]byte("y"), v)
		},
		"consumer record": func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("consumers")).Put([]byte("c"), []byte("{"))
		},
		"tombstone record": func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("tombstones")).Put([]byte("t\x00\x00\x00\x00\x00\x00\x00\x00\x01"), []byte{0xff})
		},
		"meta record": func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("meta"), []byte("[]"))
		},
		"missing bucket": func(tx *bolt.Tx) error {
			return tx.DeleteBucket([]byte("tombstones"))
		},
		"not a ledger": func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Delete([]byte("schema"))
		},
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			path := closedLedger(t, 3)
			editBolt(t, path, edit)
			err := openMustFail(t, path, ledger.ErrCorrupt)
			t.Log(err)
			checkBolt(t, path)
		})
	}
}

func TestOpenNewerSchemaRefused(t *testing.T) {
	path := closedLedger(t, 1)
	editBolt(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte{0, 0, 0, 99})
	})
	err := openMustFail(t, path, ledger.ErrSchema)
	if !strings.Contains(err.Error(), "99") {
		t.Fatalf("error %q does not name the version", err)
	}
}

// TestOpenEmptyFileRefused: an existing 0-byte file is not a new ledger. Its
// tombstones are gone, so starting afresh in it would let evicted shapes come
// back (I4): Open refuses it, names the fix and leaves it as it was; only
// AdoptSlot starts a ledger in it.
func TestOpenEmptyFileRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := openMustFail(t, path, ledger.ErrEmptyFile)
	for _, want := range []string{path, "backup", "-adopt-slot"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("the refused file changed: %v %v", fi, err)
	}
	cfg := testConfig(path, newClock())
	cfg.AdoptSlot = true
	l := openAt(t, cfg)
	mustRegister(t, l, "c", 0)
}
