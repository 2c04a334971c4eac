package ledger

import (
	"context"
	"fmt"
)

// checkSlot compares the loaded file with Config.Slot and returns how they
// disagree, or nil when the file holds the slot's history (or there is no
// slot to check). The slot's confirmed_flush_lsn never passes what this
// ledger reported, because the ledger records a flush before reporting it
// (I6); a slot confirmed further belongs to another history.
func (l *Ledger) checkSlot(fresh bool) *SlotError {
	s := l.cfg.Slot
	if s == nil {
		return nil
	}
	e := &SlotError{Path: l.cfg.Path, Slot: l.cfg.Identity.Slot, SlotConfirmed: s.ConfirmedFlush,
		FileFlush: l.meta.LastFlush, LiveShapes: l.t.shapes.Len()}
	switch {
	case s.Exists && fresh:
		e.Mismatch = SlotNewFile
	case s.Exists && s.ConfirmedFlush > l.meta.LastFlush:
		e.Mismatch = SlotFileBehind
	case !s.Exists && !fresh && l.t.shapes.Len() > 0:
		e.Mismatch = SlotMissing
	default:
		return nil
	}
	return e
}

// SlotCreated records that the slot was just created for this ledger, with
// its confirmed position at consistent point at: the ledger's reported flush
// and processed position move up to it (Postgres sends nothing before it), so
// the next Open finds a file that holds the slot's whole history. It returns
// once that is committed, with a slot_created event.
func (l *Ledger) SlotCreated(ctx context.Context, at LSN) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.startFloor = max(l.startFloor, at)
	b := l.fill
	b.wantFlush = max(b.wantFlush, at)
	b.force = true
	b.events = append(b.events, Event{Kind: EventSlotCreated, Time: l.now(), LSN: at,
		Detail: fmt.Sprintf("slot %q created at %s for this ledger", l.cfg.Identity.Slot, at)})
	l.queued()
	l.mu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if b.err != nil {
		return fmt.Errorf("recording the creation of slot %q: %w", l.cfg.Identity.Slot, b.err)
	}
	return nil
}
