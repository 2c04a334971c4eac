package ledger_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ledgerd/ledgerd/ledger"
)

// openSlot opens path against a slot in the given state.
func openSlot(path string, slot ledger.SlotInfo, adopt bool) (*ledger.Ledger, error) {
	cfg := testConfig(path, newClock())
	cfg.Slot, cfg.AdoptSlot = &slot, adopt
	return ledger.Open(cfg)
}

func wantSlotError(t *testing.T, err error, want ledger.SlotMismatch) {
	t.Helper()
	var se *ledger.SlotError
	if !errors.As(err, &se) || !errors.Is(err, ledger.ErrSlotHistory) || se.Mismatch != want {
		t.Fatalf("open: %v, want a %s *SlotError", err, want)
	}
	if !strings.Contains(err.Error(), "-adopt-slot") {
		t.Errorf("error %q does not name -adopt-slot", err)
	}
}

// TestOpenBindsTheSlot: a file is bound to its slot's history. A new file
// against a slot that exists, a file whose last reported flush is behind the
// slot (an old backup) and a file tracking live shapes whose slot is gone are
// refused (I1, I4); AdoptSlot takes the slot's position and journals it.
func TestOpenBindsTheSlot(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")

	_, err := openSlot(path, ledger.SlotInfo{Exists: true, ConfirmedFlush: 0x5000}, false)
	wantSlotError(t, err, ledger.SlotNewFile)

	// A slot created for the file binds it at the slot's consistent point.
	l, err := openSlot(path, ledger.SlotInfo{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SlotCreated(ctx, 0x6000); err != nil {
		t.Fatal(err)
	}
	if got := l.FlushLSN(); got != 0x6000 {
		t.Fatalf("flush after SlotCreated = %s, want 0/6000", got)
	}
	mustRegister(t, l, "c", 0)
	mustShapes(t, l, "c", "s")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	backup := readFile(t, path)

	// The slot where the file left it, or behind it (a Postgres crash): fine.
	for _, confirmed := range []ledger.LSN{0x6000, 0x5800} {
		l, err := openSlot(path, ledger.SlotInfo{Exists: true, ConfirmedFlush: confirmed}, false)
		if err != nil {
			t.Fatalf("slot at %s: %v", confirmed, err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// The slot past the file: the file is an old backup.
	writeFile(t, path, backup)
	_, err = openSlot(path, ledger.SlotInfo{Exists: true, ConfirmedFlush: 0x9000}, false)
	wantSlotError(t, err, ledger.SlotFileBehind)
	if string(readFile(t, path)) != string(backup) {
		t.Fatal("a refused open changed the file")
	}

	// The slot is gone while the file tracks a live shape.
	_, err = openSlot(path, ledger.SlotInfo{}, false)
	wantSlotError(t, err, ledger.SlotMissing)

	// Adopting: the file takes the slot's position and says so.
	l, err = openSlot(path, ledger.SlotInfo{Exists: true, ConfirmedFlush: 0x9000}, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.FlushLSN(); got != 0x9000 {
		t.Errorf("flush after adopting = %s, want 0/9000", got)
	}
	var kinds []string
	for _, e := range l.Events(0, 0) {
		kinds = append(kinds, e.Kind)
	}
	if !strings.Contains(strings.Join(kinds, " "), ledger.EventSlotCreated) || !strings.Contains(strings.Join(kinds, " "), ledger.EventSlotAdopted) {
		t.Errorf("journal %v lacks %s or %s", kinds, ledger.EventSlotCreated, ledger.EventSlotAdopted)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = openSlot(path, ledger.SlotInfo{Exists: true, ConfirmedFlush: 0x9000}, false)
	if err != nil {
		t.Fatalf("reopening an adopted file: %v", err)
	}
	_ = l.Close()
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
