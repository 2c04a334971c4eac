package ledger_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	bolt "go.etcd.io/bbolt"
)

// A lease is a fencing token: whoever holds it may ack for the consumer. The
// file, its snapshot and every view hold only its hash, so a stolen file or
// snapshot lets nobody ack in another consumer's place.
func TestLeaseStoredOnlyAsHash(t *testing.T) {
	l, _, path := newLedger(t)
	c := mustRegister(t, l, "c", time.Hour)
	if c.Lease == "" {
		t.Fatal("Register must return the lease token to hand to the consumer")
	}
	if _, err := l.Heartbeat("c", c.Lease, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := l.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(snap.Bytes(), []byte(c.Lease)) {
		t.Error("the snapshot holds the lease token in the clear")
	}
	if got, _ := l.Consumer("c"); got.Lease != "" {
		t.Errorf("Consumer view carries the lease %q", got.Lease)
	}
	for _, x := range l.Consumers() {
		if x.Lease != "" {
			t.Errorf("Consumers view carries the lease of %s", x.ID)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(c.Lease)) {
		t.Error("the ledger file holds the lease token in the clear")
	}
	st, err := ledger.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Consumers) != 1 || st.Consumers[0].Lease != "" {
		t.Errorf("Load carries the lease: %+v", st.Consumers)
	}
	// The hash still fences after a restart.
	r := openAt(t, testConfig(path, newClock()))
	if err := r.CheckLease("c", c.Lease); err != nil {
		t.Errorf("the lease after a restart: %v", err)
	}
	if err := r.CheckLease("c", c.Lease[:len(c.Lease)-1]+"x"); !errors.Is(err, ledger.ErrWrongLease) {
		t.Errorf("a wrong lease after a restart: %v, want ErrWrongLease", err)
	}
}

// A file written before leases were hashed holds them in the clear. Open
// hashes them in place: the consumers keep their leases across the upgrade
// (I5), and neither the file's records nor a snapshot carry them any more.
func TestClearLeaseHashedOnOpen(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := ledger.Open(testConfig(path, clk))
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, l, "live", time.Hour)
	gone := mustRegister(t, l, "gone", time.Hour)
	if err := l.Release("gone", gone.Lease); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewrite both records as an older ledgerd wrote them: "lease" in the
	// clear, no hash.
	clear := map[string]string{"live": "0123456789abcdef0123456789abcdef", "gone": "fedcba9876543210fedcba9876543210"}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("consumers"))
		for id, lease := range clear {
			var rec map[string]any
			if err := json.Unmarshal(unseal(t, []byte(id), b.Get([]byte(id))), &rec); err != nil {
				return err
			}
			for k := range rec {
				if k != "id" && len(k) > 5 && k[:5] == "lease" {
					delete(rec, k)
				}
			}
			rec["lease"] = lease
			v, _ := json.Marshal(rec)
			if err := b.Put([]byte(id), seal([]byte(id), v)); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	r := openAt(t, testConfig(path, clk))
	if err := r.CheckLease("live", clear["live"]); err != nil {
		t.Fatalf("a lease stored in the clear by an older version: %v", err)
	}
	if err := r.CheckLease("live", clear["gone"]); !errors.Is(err, ledger.ErrWrongLease) {
		t.Fatalf("another lease: %v, want ErrWrongLease", err)
	}
	var snap bytes.Buffer
	if _, err := r.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	for id, lease := range clear {
		if bytes.Contains(snap.Bytes(), []byte(lease)) {
			t.Errorf("the snapshot still holds the clear lease of %s", id)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("consumers"))
		for id, lease := range clear {
			if v := b.Get([]byte(id)); bytes.Contains(v, []byte(lease)) {
				t.Errorf("the record of %s still holds its lease in the clear: %s", id, v)
			}
		}
		return nil
	})
}
