package ledger

import (
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BuildFile writes a ledger file at cfg.Path holding the given consumers
// (leases of an hour from now) and shapes straight through bbolt, in large
// transactions: creating a million shapes one PutShape at a time would take
// an fsync each. Shapes start and are flushed at LSN 0x100.
func BuildFile(tb testing.TB, cfg Config, consumers []string, shapes func(yield func(ShapeSpec) bool)) {
	tb.Helper()
	l, err := Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := l.Close(); err != nil {
		tb.Fatal(err)
	}
	db, err := bolt.Open(cfg.Path, 0o600, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	now := time.Now()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, id := range consumers {
			c := &Consumer{ID: id, leaseHash: hashLease(newLease()), Epoch: 1, TTL: time.Hour, RegisteredAt: now.UTC(),
				LastHeartbeat: now.UTC(), HeartbeatAt: now.UTC(), ExpiresAt: now.Add(time.Hour).UTC()}
			if err := put(tx.Bucket(bucketConsumers), []byte(id), encodeConsumer(c)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	in := newInterner()
	var batch []*shapeState
	flush := func() {
		err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketShapes)
			bk.FillPercent = 1.0
			for _, s := range batch {
				if err := put(bk, []byte(s.id), encodeShape(s)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
		batch = batch[:0]
	}
	for spec := range shapes {
		batch = append(batch, &shapeState{id: spec.ID, consumer: spec.Consumer, Def: in.def(spec.Table, spec.RelID, canonFilter(spec.Filter)),
			gen: 1, start: 0x100, flushed: 0x100, created: now.UnixNano(), boundAt: spec.BoundAt})
		if len(batch) == 100_000 {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
}
