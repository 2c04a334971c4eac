package ledger

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// snapshotSuffix names the temporary files a snapshot is built in, next to
// the ledger file (same file system, no memory-backed /tmp).
const snapshotSuffix = ".snapshot-"

// compactTxBytes bounds one write transaction while a snapshot is compacted.
const compactTxBytes = 16 << 20

// WriteSnapshot writes a consistent copy of the ledger, for inspect -url
// against a running daemon, and returns the bytes written.
//
// The copy is taken in one bbolt read transaction into a temporary file next
// to the ledger, and the transaction ends before a byte goes to w: a reader
// that stops reading would otherwise keep it open, and bbolt cannot grow the
// file while a read transaction is open, so every registration, ack and
// heartbeat would wait for that reader. The copy is then compacted into a
// second file holding only the live records: free pages of a file written by
// an older version may still hold lease tokens in the clear, and a snapshot
// must carry no secret. Snapshots are built one at a time.
func (l *Ledger) WriteSnapshot(w io.Writer) (int64, error) {
	f, err := l.buildSnapshot()
	if err != nil {
		return 0, fmt.Errorf("writing ledger snapshot: %w", err)
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name()) // where an open file cannot be unlinked
	}()
	n, err := io.Copy(w, f)
	if err != nil {
		return n, fmt.Errorf("writing ledger snapshot: %w", err)
	}
	return n, nil
}

// buildSnapshot returns the compacted copy, open for reading and already
// unlinked where the system allows it, so that nothing is left behind
// whatever happens to the caller.
func (l *Ledger) buildSnapshot() (*os.File, error) {
	l.snapMu.Lock()
	defer l.snapMu.Unlock()
	raw, err := l.snapshotTemp()
	if err != nil {
		return nil, err
	}
	defer os.Remove(raw.Name())
	err = guard(func() error {
		return l.db.View(func(tx *bolt.Tx) error {
			_, err := tx.WriteTo(raw)
			return err
		})
	})
	if cerr := raw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("copying the ledger: %w", err)
	}
	out, err := l.snapshotTemp()
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			_ = out.Close()
			_ = os.Remove(out.Name())
		}
	}()
	if err := compactFile(out.Name(), raw.Name()); err != nil {
		return nil, fmt.Errorf("compacting the copy of the ledger: %w", err)
	}
	// out was opened before compactFile wrote the file through its own
	// descriptor; reading from offset 0 sees it all.
	_ = os.Remove(out.Name())
	keep = true
	return out, nil
}

func (l *Ledger) snapshotTemp() (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(l.cfg.Path), filepath.Base(l.cfg.Path)+snapshotSuffix+"*")
	if err != nil {
		return nil, fmt.Errorf("creating a temporary file for the snapshot: %w", err)
	}
	return f, nil
}

// compactFile writes the live records of the bbolt file src into dst, an
// empty file, without durability: it is a temporary copy.
func compactFile(dst, src string) error {
	return guard(func() error {
		sdb, err := bolt.Open(src, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
		if err != nil {
			return err
		}
		defer sdb.Close()
		ddb, err := bolt.Open(dst, 0o600, &bolt.Options{NoSync: true, Timeout: lockTimeout})
		if err != nil {
			return err
		}
		if err := bolt.Compact(ddb, sdb, compactTxBytes); err != nil {
			_ = ddb.Close()
			return err
		}
		return ddb.Close()
	})
}

// removeSnapshotTemps deletes temporary snapshot files a killed daemon left
// behind. Only the holder of the ledger's lock calls it: no other process
// builds snapshots of this file meanwhile.
func removeSnapshotTemps(path string) {
	dir, prefix := filepath.Dir(path), filepath.Base(path)+snapshotSuffix
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
