package ledger

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The journal is an append-only list of events keyed by a big-endian
// sequence number, written in the same bbolt transaction as the change it
// describes, so what inspect shows is exactly what happened. It is bounded by
// Config.JournalMaxEvents and Config.JournalMaxAge (trimmed from the front).

type journal struct {
	bk  *bolt.Bucket
	now time.Time
}

func newJournal(tx *bolt.Tx, now time.Time) *journal {
	return &journal{bk: tx.Bucket(bucketJournal), now: now}
}

// add appends e; a zero e.Time means the transaction's time.
func (j *journal) add(e Event) error {
	seq, err := j.bk.NextSequence()
	if err != nil {
		return err
	}
	if e.Time.IsZero() {
		e.Time = j.now
	}
	v, err := json.Marshal(eventRec{Time: nanos(e.Time), Kind: e.Kind, Consumer: e.Consumer, Shape: e.Shape,
		LSN: e.LSN, Reason: e.Reason, Detail: e.Detail})
	if err != nil {
		return err
	}
	return put(j.bk, u64(seq), v)
}

// trimBatch is the most journal keys trimJournal collects before deleting
// them: deletes are not made under a live cursor (bbolt's cursor may skip
// the key after one it deleted), and the batch bounds the keys held.
const trimBatch = 4096

// trimJournal deletes the oldest events beyond maxEvents or older than
// maxAge. Sequence numbers are contiguous (only the front is ever deleted), so
// the count is last-first+1. It is one pass over the front of the journal:
// runs of up to trimBatch keys are read with the cursor, then deleted, and
// the cursor seeks once past them; events beyond the count bound are
// deleted without being decoded.
func trimJournal(tx *bolt.Tx, now time.Time, maxEvents int, maxAge time.Duration) (int, error) {
	bk := tx.Bucket(bucketJournal)
	c := bk.Cursor()
	lk, _ := c.Last()
	if lk == nil || len(lk) != 8 {
		return 0, nil
	}
	last := binary.BigEndian.Uint64(lk)
	cutoff := now.Add(-maxAge).UnixNano()
	n := 0
	var keys [][]byte
	k, v := c.First()
	for k != nil {
		keys = keys[:0]
		young := false
		for ; k != nil && len(keys) < trimBatch; k, v = c.Next() {
			over := len(k) == 8 && last-binary.BigEndian.Uint64(k)+1 > uint64(maxEvents)
			if !over {
				// An event that cannot be read has no age; it goes with the
				// events around it, judged by the next one.
				var r eventRec
				if rec, err := unseal(k, v, true); err == nil && json.Unmarshal(rec, &r) == nil && r.Time >= cutoff {
					young = true
					break
				}
			}
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, key := range keys {
			if err := bk.Delete(key); err != nil {
				return n, err
			}
			n++
		}
		if young || len(keys) == 0 {
			break
		}
		k, v = c.Seek(keys[len(keys)-1])
	}
	return n, nil
}

// Events returns up to limit journal events with a sequence number greater
// than since, oldest first. limit <= 0 means 1000.
func (l *Ledger) Events(since uint64, limit int) []Event {
	if limit <= 0 {
		limit = 1000
	}
	var out []Event
	err := guard(func() error {
		return l.db.View(func(tx *bolt.Tx) error {
			var err error
			out, _, err = readEvents(tx, true, since, limit)
			return err
		})
	})
	if err != nil {
		l.log.Error().Err(err).Msg("reading the journal")
	}
	return out
}

// readEvents reads the journal after since. A record that cannot be read is
// left out and reported as a problem: the journal is history, and one bad
// record must not hide the rest of it (or the state) from inspect.
func readEvents(tx *bolt.Tx, sealed bool, since uint64, limit int) ([]Event, []Problem, error) {
	var out []Event
	var probs []Problem
	c := tx.Bucket(bucketJournal).Cursor()
	for k, v := c.Seek(u64(since + 1)); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
		e, err := readEvent(k, v, sealed)
		if err != nil {
			probs = append(probs, Problem{Check: "journal", Subject: fmt.Sprintf("%x", k),
				Detail: fmt.Sprintf("%v; the event is left out", err)})
			continue
		}
		out = append(out, e)
	}
	return out, probs, nil
}

func readEvent(k, v []byte, sealed bool) (Event, error) {
	if v == nil {
		return Event{}, fmt.Errorf("%w: nested bucket %q in the journal", ErrCorrupt, k)
	}
	rec, err := unseal(k, v, sealed)
	if err != nil {
		return Event{}, err
	}
	return decodeEvent(k, rec)
}
