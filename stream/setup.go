package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledgerd/ledgerd/ledger"
)

// Slot is the configured slot as the preflight found it.
type Slot struct {
	// Exists is false when the slot is missing and Config.CreateSlot allows
	// creating it: Setup.CreateSlot does.
	Exists bool
	// ConfirmedFlush is the slot's confirmed_flush_lsn.
	ConfirmedFlush ledger.LSN
}

// Setup is a checked replication connection held through a daemon's start.
// The slot is created on it only once the caller is ready (the ledger file
// open and locked), and a slot it created is dropped again if the start
// fails: an inactive slot left behind by a failed start would pin WAL for
// ever (I3).
type Setup struct {
	// System is what IDENTIFY_SYSTEM reported.
	System System
	// Slot is the slot as the checks found it.
	Slot Slot

	s       *Stream
	mu      sync.Mutex
	conn    *pgconn.PgConn // nil once Done or Abort
	created bool
}

// Setup connects and runs the preflight checks like Check, creating the
// publication when configured but not the slot: a missing slot is reported
// (Slot.Exists false) when Config.CreateSlot allows creating it, and is
// ErrSlotMissing otherwise. Finish with Done or Abort.
func (s *Stream) Setup(ctx context.Context) (*Setup, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	sys, st, err := s.preflight(ctx, conn, true, true)
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	sys.ConfirmedFlush = st.confirmedFlush
	return &Setup{System: sys, Slot: Slot{Exists: !st.missing, ConfirmedFlush: st.confirmedFlush}, s: s, conn: conn}, nil
}

// CreateSlot creates the missing slot and returns its confirmed_flush_lsn
// (its consistent point). A Setup that is then aborted drops it.
func (u *Setup) CreateSlot(ctx context.Context) (ledger.LSN, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil {
		return 0, errors.New("creating the slot: the setup is finished")
	}
	if u.Slot.Exists {
		return u.Slot.ConfirmedFlush, nil
	}
	at, err := u.s.createSlot(ctx, u.conn)
	if err != nil {
		return 0, err
	}
	u.created = true
	u.Slot = Slot{Exists: true, ConfirmedFlush: at}
	u.System.ConfirmedFlush = at
	return at, nil
}

// Done ends the setup of a start that completed: the slot stays, whatever
// happens next. It may be called more than once.
func (u *Setup) Done() {
	u.mu.Lock()
	conn := u.conn
	u.conn = nil
	u.mu.Unlock()
	if conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		conn.Close(ctx)
	}
}

// Abort ends the setup of a start that failed: the slot, if this Setup
// created it, is dropped, first on the held connection, then on a new one.
// The error names the slot to drop by hand when neither works. After Done
// it does nothing.
func (u *Setup) Abort(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil {
		return nil // Done: the start completed
	}
	if !u.created {
		u.close()
		return nil
	}
	slot := u.s.cfg.Slot
	err := pglogrepl.DropReplicationSlot(ctx, u.conn, slot, pglogrepl.DropReplicationSlotOptions{})
	u.close()
	if err != nil {
		if conn, cerr := u.s.connect(ctx); cerr == nil {
			err = pglogrepl.DropReplicationSlot(ctx, conn, slot, pglogrepl.DropReplicationSlotOptions{})
			conn.Close(context.WithoutCancel(ctx))
		}
	}
	if err != nil {
		return fmt.Errorf("dropping slot %q, created by this failed start: %w; drop it by hand, or it pins WAL: SELECT pg_drop_replication_slot(%s)",
			slot, err, quoteLiteral(slot))
	}
	u.created = false
	u.s.log.Warn().Msg("dropped the replication slot created by this failed start")
	return nil
}

// close closes the held connection. Caller holds mu.
func (u *Setup) close() {
	if u.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	u.conn.Close(ctx)
	u.conn = nil
}
