package ledger

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Verify checks a ledger file without changing it: bbolt's own consistency
// check (page structure, freelist), then the ledger's invariants:
//
//   - the metadata names a system and a slot;
//   - every record's checksum matches (schema version 2 on) and every record
//     decodes: each bad record is a problem of its own, and the checks below
//     run on the records that are sound;
//   - every shape's consumer exists (a shape of a gone consumer pins the slot
//     forever: I3);
//   - no shape is live at a generation that also has a tombstone (I4);
//   - every shape's flushed LSN is at least its start LSN and, once acked,
//     at most the processed position (I6: an ack beyond what was processed
//     confirms transactions nobody received, I1);
//   - the last reported flush is not beyond the processed position.
//
// It returns the problems found; the error is for a file that could not be
// checked at all (missing, locked, not a ledger, unreadable metadata).
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
	bad := func(subject string, err error) {
		check := "decode"
		if errors.Is(err, errChecksum) {
			check = "checksum"
		}
		add(check, subject, "%v", err)
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
			sealed := m.SchemaVersion >= sealedSchema
			if m.Identity.SystemID == "" || m.Identity.Slot == "" {
				add("identity", "", "metadata names no system identifier or slot")
			}
			consumers := map[string]*Consumer{}
			_ = tx.Bucket(bucketConsumers).ForEach(func(k, v []byte) error {
				if c, err := readConsumer(k, v, sealed); err != nil {
					bad(string(k), err)
				} else {
					consumers[c.ID] = c
				}
				return nil
			})
			t := newTracker()
			in := newInterner()
			_ = tx.Bucket(bucketShapes).ForEach(func(k, v []byte) error {
				if s, err := readShape(string(k), k, v, sealed, in); err != nil {
					bad(string(k), err)
				} else {
					t.add(s)
				}
				return nil
			})
			tombs := map[string]Tombstone{}
			tombAt := map[string]bool{}
			_ = tx.Bucket(bucketTombstones).ForEach(func(k, v []byte) error {
				ts, err := readTomb(k, v, sealed)
				if err != nil {
					bad(string(k), err)
					return nil
				}
				tombAt[string(tombKey(ts.Shape, ts.Generation))] = true
				if old, ok := tombs[ts.Shape]; !ok || ts.Generation >= old.Generation {
					tombs[ts.Shape] = ts
				}
				return nil
			})
			_ = tx.Bucket(bucketGenerations).ForEach(func(k, v []byte) error {
				if g, err := unseal(k, v, sealed); err != nil {
					bad(string(k), fmt.Errorf("generation of %q: %w", k, err))
				} else if len(g) != 8 {
					add("decode", string(k), "generation record of %d bytes, want 8", len(g))
				}
				return nil
			})
			_, jprobs, _ := readEvents(tx, sealed, 0, 0)
			probs = append(probs, jprobs...)

			for s := range t.shapes.All() {
				id := s.id
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
				// A shape never acked stands at its start, one below the
				// processed position when it was created; its record is
				// committed at once, the position with the next group
				// commit, so only an ack beyond the position is wrong.
				if m.Position != 0 && s.flushed > m.Position && s.flushed > s.start {
					add("flushed_beyond_position", id, "flushed %s is beyond the processed position %s: it acks transactions that were never processed", s.flushed, m.Position)
				}
				if s.gen == 0 {
					add("generation", id, "generation 0")
				}
				if tombAt[string(tombKey(id, s.gen))] {
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
