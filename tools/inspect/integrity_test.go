package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// editFile changes a closed ledger file through bbolt.
func editFile(t *testing.T, path string, f func(tx *bolt.Tx) error) {
	t.Helper()
	db := must(bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second}))
	check(t, db.Update(f))
	check(t, db.Close())
}

// TestUnreadableJournalRecord: one journal record that cannot be read no
// longer blinds inspect: status and export answer (status notes it), verify
// names it and exits 1.
func TestUnreadableJournalRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledgerd.db")
	buildLedger(t, path)
	editFile(t, path, func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte("journal"))
		k, _ := bk.Cursor().First()
		return bk.Put(k, []byte("{not json"))
	})
	r := runInspect(t, nil, "-db", path, "status")
	if r.code != exitOK || !strings.Contains(r.stdout, "1 journal records could not be read") {
		t.Errorf("status: exit %d, want 0 with a note; stdout %s stderr %s", r.code, r.stdout, r.stderr)
	}
	if r := runInspect(t, nil, "-db", path, "export"); r.code != exitOK {
		t.Errorf("export: exit %d, want 0; stderr %s", r.code, r.stderr)
	}
	r = runInspect(t, nil, "-db", path, "verify")
	if r.code != exitProblem || !strings.Contains(r.stdout, "PROBLEM journal") {
		t.Errorf("verify: exit %d, want 1 naming the journal record; stdout %s stderr %s", r.code, r.stdout, r.stderr)
	}
}

// TestVerifyChangedRecord: 8 bytes of a shape's flushed LSN changed on disk
// are found by verify (exit 1, the checksum named), where status exits 2
// and points at verify.
func TestVerifyChangedRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledgerd.db")
	buildLedger(t, path)
	b := must(os.ReadFile(path))
	// "users" then its record: version 1, generation 1, start, flushed.
	hdr := binary.BigEndian.AppendUint64([]byte("users\x01"), 1)
	n := 0
	for i := 0; ; {
		j := bytes.Index(b[i:], hdr)
		if j < 0 {
			break
		}
		off := i + j + len("users") + 17
		binary.BigEndian.PutUint64(b[off:], 0xFFFFFF)
		i += j + 1
		n++
	}
	if n == 0 {
		t.Fatal("the shape record was not found in the file")
	}
	check(t, os.WriteFile(path, b, 0o600))
	r := runInspect(t, nil, "-db", path, "verify")
	if r.code != exitProblem || !strings.Contains(r.stdout, "PROBLEM checksum users") {
		t.Errorf("verify: exit %d, want 1 naming the checksum of users; stdout %s stderr %s", r.code, r.stdout, r.stderr)
	}
	r = runInspect(t, nil, "-db", path, "status")
	if r.code != exitCannot || !strings.Contains(r.stderr, "verify") {
		t.Errorf("status: exit %d, want 2 pointing at verify; stderr %s", r.code, r.stderr)
	}
}

// TestVersion1FileReadOnly: a file written by a version-1 ledgerd is read
// as it is (status says schema version 1), verified clean, and not written.
func TestVersion1FileReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	src := must(os.Open("../../testdata/ledger/v1.db"))
	dst := must(os.Create(path))
	must(io.Copy(dst, src))
	check(t, dst.Close())
	src.Close()
	before := must(os.ReadFile(path))
	for _, args := range [][]string{{"-json", "status"}, {"verify"}, {"export"}, {"why"}} {
		r := runInspect(t, nil, append([]string{"-db", path}, args...)...)
		if r.code != exitOK {
			t.Errorf("%v on a version-1 file: exit %d; stderr %s", args, r.code, r.stderr)
		}
		if args[len(args)-1] == "status" && !strings.Contains(r.stdout, `"schema_version": 1`) {
			t.Errorf("status of a version-1 file does not say so:\n%s", r.stdout)
		}
	}
	if !bytes.Equal(must(os.ReadFile(path)), before) {
		t.Error("inspect changed a version-1 file")
	}
}
