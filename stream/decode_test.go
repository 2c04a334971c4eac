package stream_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/ledgerd/ledgerd/stream"
)

// firstOf returns the first captured message of type typ.
func firstOf(t *testing.T, msgs [][]byte, typ byte) []byte {
	t.Helper()
	for _, m := range msgs {
		if m[0] == typ {
			return append([]byte(nil), m...)
		}
	}
	t.Fatalf("no %q message in the capture", typ)
	return nil
}

// TestDecodeMalformed: malformed or out-of-order input is an error wrapping
// ErrDecode that says what is wrong, never a panic.
func TestDecodeMalformed(t *testing.T) {
	msgs := readCapture(t)
	begin, rel, ins, commit := firstOf(t, msgs, 'B'), firstOf(t, msgs, 'R'), firstOf(t, msgs, 'I'), firstOf(t, msgs, 'C')
	hugeLen := append([]byte(nil), ins...)
	// Insert layout: 'I', relid(4), 'N', ncols(2), kind(1), len(4)...
	binary.BigEndian.PutUint32(hugeLen[1+4+1+2+1:], 0xFFFFFFF0)
	badKind := append([]byte(nil), ins...)
	badKind[1+4+1+2] = 'z'
	fewerCols := append([]byte(nil), ins[:1+4+1]...)
	fewerCols = binary.BigEndian.AppendUint16(fewerCols, 1)
	fewerCols = append(binary.BigEndian.AppendUint32(append(fewerCols, 't'), 1), '9')

	cases := []struct {
		name string
		seq  [][]byte
		want string
	}{
		{"empty", [][]byte{{}}, "empty message"},
		{"unknown type", [][]byte{{'S', 0, 0}}, "unsupported message type"},
		{"short begin", [][]byte{begin[:10]}, "too short"},
		{"trailing bytes", [][]byte{append(append([]byte(nil), begin...), 0)}, "trailing"},
		{"huge length", [][]byte{rel, begin, hugeLen}, "beyond the end"},
		{"bad column kind", [][]byte{rel, begin, badKind}, "column kind"},
		{"column count", [][]byte{rel, begin, fewerCols}, "has 1 columns"},
		{"change before relation", [][]byte{begin, ins}, "before its relation"},
		{"change outside txn", [][]byte{rel, ins}, "outside a transaction"},
		{"commit without begin", [][]byte{commit}, "without begin"},
		{"nested begin", [][]byte{begin, begin}, "inside open"},
		{"unterminated string", [][]byte{rel[:8]}, "unterminated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := stream.NewDecoder()
			var err error
			for _, m := range c.seq {
				if _, err = d.Decode(m); err != nil {
					break
				}
			}
			if !errors.Is(err, stream.ErrDecode) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want ErrDecode mentioning %q", err, c.want)
			}
		})
	}
}

// TestDecodeSkipThrough: transactions at or below SkipThrough are dropped,
// later ones delivered.
func TestDecodeSkipThrough(t *testing.T) {
	msgs := readCapture(t)
	var commits []*stream.Txn
	d := stream.NewDecoder()
	for _, m := range msgs {
		txn, err := d.Decode(m)
		if err != nil {
			t.Fatal(err)
		}
		if txn != nil {
			commits = append(commits, txn)
		}
	}
	d = stream.NewDecoder()
	d.SkipThrough = commits[2].CommitLSN
	var got []*stream.Txn
	for _, m := range msgs {
		txn, _ := d.Decode(m)
		if txn != nil {
			got = append(got, txn)
		}
	}
	if len(got) != len(commits)-3 || got[0].CommitLSN != commits[3].CommitLSN {
		t.Errorf("after skipping 3 of %d: got %d starting at %s", len(commits), len(got), got[0].CommitLSN)
	}
}

// TestDecodeTableWithoutColumns: a table may have no columns (CREATE TABLE
// t ()), and an insert into it is a row change like any other, not a
// malformed message that ends the session.
func TestDecodeTableWithoutColumns(t *testing.T) {
	be := binary.BigEndian
	rel := append(be.AppendUint32([]byte{'R'}, 16385), "public\x00empty\x00d"...)
	rel = be.AppendUint16(rel, 0)
	begin := be.AppendUint32(be.AppendUint64(be.AppendUint64([]byte{'B'}, 0x100), 1), 7)
	ins := be.AppendUint16(append(be.AppendUint32([]byte{'I'}, 16385), 'N'), 0)
	commit := be.AppendUint64(be.AppendUint64(be.AppendUint64([]byte{'C', 0}, 0x100), 0x130), 1)
	d := stream.NewDecoder()
	var txn *stream.Txn
	for _, m := range [][]byte{rel, begin, ins, commit} {
		var err error
		if txn, err = d.Decode(m); err != nil {
			t.Fatalf("decoding %q: %v", m[0], err)
		}
	}
	if txn == nil || len(txn.Changes) != 1 || txn.Changes[0].Op != stream.OpInsert || txn.Changes[0].Table != "public.empty" || len(txn.Changes[0].New) != 0 {
		t.Fatalf("got %+v, want one insert into public.empty with no columns", txn)
	}
}
