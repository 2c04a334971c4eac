package ledger

import (
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// Load reads a whole ledger file without changing it: read-only bbolt open
// (shared lock, one-second timeout), no restart rules, no writes. It is what
// inspect -db uses, even while ledgerd is down. A file held by a running
// daemon is ErrLocked (ask the daemon with inspect -url instead); a file that
// is not a readable ledger is ErrCorrupt.
//
// Shapes in the result carry only durable fields: nothing is pending in a
// file.
func Load(path string) (*State, error) {
	db, err := openBolt(path, true)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	st := &State{}
	err = guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			m, err := readHeader(tx)
			if err != nil {
				return err
			}
			st.Meta = m
			consumers := map[string]*Consumer{}
			t := newTracker()
			tombs := map[string]Tombstone{}
			sealed := m.SchemaVersion >= sealedSchema
			if err := loadState(tx, sealed, consumers, t, tombs); err != nil {
				return err
			}
			for _, c := range consumers {
				st.Consumers = append(st.Consumers, cloneConsumer(c))
			}
			sort.Slice(st.Consumers, func(i, j int) bool { return st.Consumers[i].ID < st.Consumers[j].ID })
			for s := range t.shapes.All() {
				st.Shapes = append(st.Shapes, Shape{
					ShapeSpec:  ShapeSpec{ID: s.id, Consumer: s.consumer, Table: s.table, Filter: s.Filter()},
					Generation: s.gen, StartLSN: s.start, FlushedLSN: s.flushed,
					CreatedAt: fromNanos(s.created), LastAckAt: fromNanos(s.lastAck),
				})
			}
			sort.Slice(st.Shapes, func(i, j int) bool { return st.Shapes[i].ID < st.Shapes[j].ID })
			if st.Tombstones, err = readTombstones(tx, sealed); err != nil {
				return err
			}
			st.Events, st.Problems, err = readEvents(tx, sealed, 0, 0)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("loading ledger %s: %w", path, err)
	}
	return st, nil
}

// readHeader reads the metadata of an existing ledger file and checks that
// every bucket is there: what a read-only look at a file starts with.
func readHeader(tx *bolt.Tx) (Meta, error) {
	m, ok, err := readMeta(tx)
	if err != nil {
		return Meta{}, err
	}
	if !ok {
		return Meta{}, fmt.Errorf("%w: no ledger metadata in the file", ErrCorrupt)
	}
	if err := checkBuckets(tx); err != nil {
		return Meta{}, err
	}
	return m, nil
}
