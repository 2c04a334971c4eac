package ledger

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Verify checks a ledger file without changing it: bbolt's own consistency
// check (page structure, freelist), then the ledger's invariants:
//
//   - the metadata names a system and a slot;
//   - every record decodes;
//   - every shape's consumer exists (a shape of a gone consumer pins the slot
//     forever: I3);
//   - no shape is live at a generation that also has a tombstone (I4);
//   - every shape's flushed LSN is at least its start LSN (I6);
//   - the last reported flush is not beyond the processed position.
//
// It returns the problems found; the error is for a file that could not be
// checked at all (missing, locked, not a ledger).
func Verify(path string) ([]Problem, error) {
	db, err := openBolt(path, true)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var probs []Problem
	add := func(check, subject, format string, args ...any) {
		probs = append(probs, Problem{Check: check, Subject: subject, Detail: fmt.Sprintf(format, args...)})
	}
	err = guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			for cerr := range tx.Check() {
				add("bbolt", "", "%v", cerr)
			}
			m, err := readHeader(tx)
			if err != nil {
				return err
			}
			if m.Identity.SystemID == "" || m.Identity.Slot == "" {
				add("identity", "", "metadata names no system identifier or slot")
			}
			consumers := map[string]*Consumer{}
			t := newTracker()
			tombs := map[string]Tombstone{}
			if err := loadState(tx, consumers, t, tombs, nil); err != nil {
				add("decode", "", "%v", err)
				return nil
			}
			for id, s := range t.shapes {
				c := consumers[s.consumer]
				switch {
				case c == nil:
					add("shape_owner", id, "owned by consumer %q, which does not exist", s.consumer)
				case c.Gone:
					add("shape_owner", id, "owned by consumer %q, which is gone (%s)", s.consumer, c.GoneReason)
				}
				if s.flushed < s.start {
					add("flushed_before_start", id, "flushed %s is before start %s", s.flushed, s.start)
				}
				if s.gen == 0 {
					add("generation", id, "generation 0")
				}
				if v := tx.Bucket(bucketTombstones).Get(tombKey(id, s.gen)); v != nil {
					add("resurrected", id, "live at generation %d, which has a tombstone", s.gen)
				}
				if ts, ok := tombs[id]; ok && ts.Generation > s.gen {
					add("resurrected", id, "live at generation %d below its tombstone's generation %d", s.gen, ts.Generation)
				}
			}
			for _, c := range consumers {
				if !c.Gone && c.leaseHash == (leaseHash{}) {
					add("consumer_lease", c.ID, "live consumer without a lease token")
				}
			}
			if m.Position != 0 && m.LastFlush > m.Position {
				add("flush_beyond_position", "", "last reported flush %s is beyond the processed position %s", m.LastFlush, m.Position)
			}
			return nil
		})
	})
	if err != nil {
		return probs, fmt.Errorf("verifying ledger %s: %w", path, err)
	}
	return probs, nil
}
