package ledger

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
)

// stallWriter is a snapshot reader that looks at the ledger's open read
// transactions when the snapshot is first written to it.
type stallWriter struct {
	l      *Ledger
	openTx int
	calls  int
	buf    bytes.Buffer
}

func (w *stallWriter) Write(p []byte) (int, error) {
	if w.calls == 0 {
		w.openTx = w.l.db.Stats().OpenTxN
	}
	w.calls++
	return w.buf.Write(p)
}

// A reader of the snapshot that stops reading must not hold a bbolt read
// transaction: while one is open, a write that grows the file waits for it,
// and with it every registration, ack and heartbeat. The snapshot is copied
// out of the transaction before a byte goes to the reader.
func TestSnapshotWrittenOutsideReadTx(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(Config{Path: path, Identity: Identity{SystemID: "1", Slot: "s"}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Register(ConsumerSpec{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	w := &stallWriter{l: l}
	n, err := l.WriteSnapshot(w)
	if err != nil {
		t.Fatal(err)
	}
	if w.calls == 0 || n != int64(w.buf.Len()) {
		t.Fatalf("snapshot of %d bytes in %d writes, reported %d", w.buf.Len(), w.calls, n)
	}
	if w.openTx != 0 {
		t.Errorf("%d read transactions open while the snapshot is written to its reader", w.openTx)
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*"))
	if len(matches) != 1 {
		t.Errorf("files left next to the ledger: %v", matches)
	}
}

// A daemon killed while it built a snapshot leaves its temporary files; the
// next Open removes them, and only them.
func TestOpenRemovesSnapshotLeftovers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	left := filepath.Join(dir, "ledger.db"+snapshotSuffix+"123")
	other := filepath.Join(dir, "other.db"+snapshotSuffix+"123")
	for _, p := range []string{left, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Open(Config{Path: path, Identity: Identity{SystemID: "1", Slot: "s"}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("leftover snapshot file kept: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another ledger's file removed: %v", err)
	}
}
