package stream_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ledgerd/ledgerd/stream"
)

// TestSetupCreatesTheSlotOnlyWhenAsked: Setup reports a missing slot instead
// of creating it; CreateSlot creates it at the slot's confirmed position;
// Abort drops a slot it created (a failed start must not leave one pinning
// WAL, I3) and Done keeps it, for good.
func TestSetupCreatesTheSlotOnlyWhenAsked(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, err := stream.New(e.cfg, newRecorder(true))
	if err != nil {
		t.Fatal(err)
	}
	setup := func() *stream.Setup {
		t.Helper()
		u, err := s.Setup(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}

	exists := func() bool {
		t.Helper()
		var n int
		if err := e.sql.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", e.cfg.Slot).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	u := setup()
	if u.Slot.Exists || u.System.SystemID == "" || exists() {
		t.Fatalf("setup of a missing slot: %+v, exists %v; want it reported missing, not created", u.Slot, exists())
	}
	at, err := u.CreateSlot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.confirmed(); at == 0 || got != at {
		t.Fatalf("CreateSlot returned %s, the slot is confirmed at %s", at, got)
	}
	if err := u.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if exists() {
		t.Fatal("the aborted setup left the slot behind")
	}

	u = setup()
	if _, err := u.CreateSlot(ctx); err != nil {
		t.Fatal(err)
	}
	u.Done()
	if err := u.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if !exists() {
		t.Fatal("Abort after Done dropped the slot")
	}
	at = e.confirmed()
	u = setup()
	if !u.Slot.Exists || u.Slot.ConfirmedFlush != at {
		t.Errorf("setup of an existing slot: %+v, want it confirmed at %s", u.Slot, at)
	}
	if err := u.Abort(ctx); err != nil || e.confirmed() != at {
		t.Errorf("aborting a setup that created nothing: %v, slot at %s", err, e.confirmed())
	}

	e.cfg.CreateSlot = false
	e.cfg.Slot = "other"
	s2, _ := stream.New(e.cfg, newRecorder(true))
	if _, err := s2.Setup(ctx); !errors.Is(err, stream.ErrSlotMissing) {
		t.Errorf("setup of a missing slot without CreateSlot: %v, want ErrSlotMissing", err)
	}
}
