package ledger

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ledgerd/ledgerd/internal/idmap"
)

// load reads the file into memory. It writes nothing, so a foreign, newer or
// corrupt file is left exactly as it was. fresh is true for a file with no
// ledger in it yet.
func (l *Ledger) load() (fresh bool, err error) {
	err = guard(func() error {
		return l.db.View(func(tx *bolt.Tx) error {
			m, ok, err := readMeta(tx)
			if err != nil {
				return err
			}
			if !ok {
				empty := true
				_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
				if !empty {
					return fmt.Errorf("%w: a bbolt file without ledger metadata", ErrCorrupt)
				}
				fresh = true
				return nil
			}
			want := l.cfg.Identity
			if m.Identity.SystemID != want.SystemID || m.Identity.Slot != want.Slot {
				return &ForeignError{Path: l.cfg.Path, Have: m.Identity, Want: want}
			}
			if err := checkBuckets(tx); err != nil {
				return err
			}
			// bbolt's check reads the file in a transaction of its own
			// while the state is loaded; it decides first: a damaged
			// file is reported as such, whatever the load ran into.
			checked := make(chan error, 1)
			go func() {
				checked <- guard(func() error { return l.db.View(checkPages) })
			}()
			l.meta = m
			l.persistedFlush = m.LastFlush
			l.durableSafe = m.LastFlush
			l.startFloor = m.Position
			err = guard(func() error { return loadState(tx, m.SchemaVersion >= sealedSchema, l.consumers, l.t, l.tombs) })
			if cerr := <-checked; cerr != nil {
				return cerr
			}
			if err != nil {
				return err
			}
			l.tombCount = tx.Bucket(bucketTombstones).Stats().KeyN
			return nil
		})
	})
	if err != nil {
		return false, fmt.Errorf("loading ledger %s: %w", l.cfg.Path, err)
	}
	return fresh, nil
}

// checkPages runs bbolt's consistency check (every page reachable once, the
// freelist right). It costs about 40 ms for a million shapes, and refuses a
// damaged file at start rather than failing group commits later.
func checkPages(tx *bolt.Tx) error {
	var first error
	n := 0
	for err := range tx.Check() {
		if first == nil {
			first = err
		}
		n++
	}
	if first != nil {
		return fmt.Errorf("%w: bbolt consistency check found %d problems, the first: %v", ErrCorrupt, n, first)
	}
	return nil
}

// loadState decodes consumers, shapes and the latest tombstone of each id,
// checking each record's checksum when sealed.
func loadState(tx *bolt.Tx, sealed bool, consumers map[string]*Consumer, t *tracker, tombs map[string]Tombstone) error {
	err := tx.Bucket(bucketConsumers).ForEach(func(k, v []byte) error {
		c, err := readConsumer(k, v, sealed)
		if err != nil {
			return err
		}
		consumers[c.ID] = c
		return nil
	})
	if err != nil {
		return err
	}
	in := t.defs
	for id := range consumers {
		in.strs[id] = id
	}
	sb := tx.Bucket(bucketShapes)
	if t.shapes.Len() == 0 {
		// Sized once: growing a map of a million entries rehashes it
		// twenty times.
		t.shapes = idmap.New(idOf, sb.Stats().KeyN)
	}
	// The ids of a run of records are copied into one string they share:
	// a million ids allocated one by one cost a million small objects.
	//
	// Decoding (which shares definitions through t.defs) and indexing (the
	// rest of t) touch disjoint parts of the tracker: the runs decoded here
	// are indexed by another goroutine, in the file's order, so a start
	// with a million shapes uses a second core for about a third of the
	// load.
	const run = 1024
	adds := make(chan []*shapeState, 4)
	added := make(chan struct{})
	go func() {
		defer close(added)
		for ss := range adds {
			for _, s := range ss {
				t.add(s)
			}
		}
	}()
	defer func() {
		close(adds)
		<-added
	}()
	keys, vals := make([][]byte, 0, run), make([][]byte, 0, run)
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		ss := make([]*shapeState, 0, len(keys))
		n := 0
		for _, k := range keys {
			n += len(k)
		}
		var ids strings.Builder
		ids.Grow(n)
		for _, k := range keys {
			ids.Write(k)
		}
		all, off := ids.String(), 0
		for i, k := range keys {
			id := all[off : off+len(k)]
			off += len(k)
			s, err := readShape(id, k, vals[i], sealed, in)
			if err != nil {
				return err
			}
			ss = append(ss, s)
		}
		adds <- ss
		clear(keys)
		clear(vals)
		keys, vals = keys[:0], vals[:0]
		return nil
	}
	c := sb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		keys, vals = append(keys, k), append(vals, v)
		if len(keys) == run {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return tx.Bucket(bucketTombstones).ForEach(func(k, v []byte) error {
		ts, err := readTomb(k, v, sealed)
		if err != nil {
			return err
		}
		if old, ok := tombs[ts.Shape]; !ok || ts.Generation >= old.Generation {
			tombs[ts.Shape] = ts
		}
		return nil
	})
}

func readConsumer(k, v []byte, sealed bool) (*Consumer, error) {
	rec, err := unseal(k, v, sealed)
	if err != nil {
		return nil, fmt.Errorf("consumer %q: %w", k, err)
	}
	return decodeConsumer(k, rec)
}

// readShape reads the record of shape id (key k).
func readShape(id string, k, v []byte, sealed bool, in *interner) (*shapeState, error) {
	if v == nil {
		return nil, fmt.Errorf("%w: nested bucket %q among shapes", ErrCorrupt, k)
	}
	rec, err := unseal(k, v, sealed)
	if err != nil {
		return nil, fmt.Errorf("shape %q: %w", k, err)
	}
	return decodeShape(id, rec, in)
}

// start initialises a fresh file or applies the restart rules to a loaded
// one, in one bbolt transaction.
//
// Restart rules (I5), after etcd's lessor on promotion: the file says when
// the ledger last knew the world (the last reconcile tick, or the clean
// shutdown). A consumer whose lease had already run out by then was dead
// before ledgerd went down: it is marked gone and its shapes are evicted as
// expired_before_restart. Every other lease is extended to now + TTL, because
// ledgerd's own downtime is not evidence against anyone; its consumer gets a
// full TTL to come back. Nothing else is evicted at start.
//
// adopt, when set, is the slot the file is adopting (Config.AdoptSlot): the
// slot's confirmed position becomes the file's reported flush and processed
// position, since Postgres will never send anything before it again, and the
// adoption is journaled.
func (l *Ledger) start(fresh bool, adopt *SlotError) error {
	now := l.now().UTC()
	var gone []*Consumer
	var evicted []*shapeState
	var tss []Tombstone
	var removed []Tombstone
	hashed := 0 // records of an older version holding their lease in the clear
	err := guard(func() error {
		return l.db.Update(func(tx *bolt.Tx) error {
			if fresh {
				for _, name := range allBuckets {
					if _, err := tx.CreateBucketIfNotExists(name); err != nil {
						return err
					}
				}
				if err := putSchema(tx); err != nil {
					return err
				}
				l.meta = Meta{SchemaVersion: SchemaVersion, Identity: l.cfg.Identity, CreatedAt: now}
			}
			// An older file is upgraded first, in this transaction: what
			// the restart writes below is sealed like the rest.
			upgraded := l.meta.SchemaVersion
			if l.meta.SchemaVersion < SchemaVersion {
				if err := upgradeTx(tx); err != nil {
					return fmt.Errorf("upgrading from schema version %d: %w", l.meta.SchemaVersion, err)
				}
				l.meta.SchemaVersion = SchemaVersion
			}
			j := newJournal(tx, now)
			if have := l.meta.Identity; !fresh && (have.Timeline != l.cfg.Identity.Timeline || have.Database != l.cfg.Identity.Database) {
				if err := j.add(Event{Kind: EventTimeline, Detail: fmt.Sprintf("timeline %d -> %d, database %q -> %q",
					have.Timeline, l.cfg.Identity.Timeline, have.Database, l.cfg.Identity.Database)}); err != nil {
					return err
				}
				l.meta.Identity = l.cfg.Identity
			}
			// Leases are judged against the last time liveness was judged:
			// the last reconcile tick. A clean shutdown stops heartbeats
			// from being taken some time before it is stamped (the drain),
			// so judging against the shutdown time would evict a consumer
			// that only ledgerd's own shutdown kept from renewing (I5). The
			// shutdown time serves only a ledger that never recorded a tick.
			T := l.meta.Tick
			if T.IsZero() {
				T = l.meta.CleanShutdown
			}
			extended := 0
			hashed = 0
			for _, c := range l.consumers {
				if c.leaseClear {
					hashed++ // every record below is rewritten, holding the hash only
				}
				if c.Gone {
					if c.leaseClear {
						if err := put(tx.Bucket(bucketConsumers), []byte(c.ID), encodeConsumer(c)); err != nil {
							return err
						}
					}
					continue
				}
				if !T.IsZero() && !c.Streaming && c.ExpiresAt.Before(T) {
					c.Gone, c.GoneReason, c.GoneAt = true, ReasonExpiredBeforeRestart, now
					ev := fmt.Sprintf("lease expired at %s, before the last recorded tick %s",
						c.ExpiresAt.Format(time.RFC3339Nano), T.UTC().Format(time.RFC3339Nano))
					if err := goneTx(tx, j, c, ev, "restart"); err != nil {
						return err
					}
					var owned []*shapeState
					if o := l.t.owners[c.ID]; o != nil {
						for s := o.head; s != nil; s = s.next {
							owned = append(owned, s)
						}
					}
					for _, s := range owned {
						ts := tombstoneOf(s, ReasonExpiredBeforeRestart, ev, "restart", now)
						if err := evictTx(tx, j, ts); err != nil {
							return err
						}
						evicted, tss = append(evicted, s), append(tss, ts)
					}
					gone = append(gone, c)
					continue
				}
				c.Streaming = false
				l.renew(c, now)
				if err := put(tx.Bucket(bucketConsumers), []byte(c.ID), encodeConsumer(c)); err != nil {
					return err
				}
				extended++
			}
			if adopt != nil {
				if err := j.add(Event{Kind: EventSlotAdopted, LSN: adopt.SlotConfirmed, Detail: fmt.Sprintf(
					"adopted slot %q (%s): the file's last reported flush was %s, the slot's confirmed_flush_lsn %s; %d live shapes; every consumer must resynchronise",
					adopt.Slot, adopt.Mismatch, adopt.FileFlush, adopt.SlotConfirmed, adopt.LiveShapes)}); err != nil {
					return err
				}
				l.meta.LastFlush = max(l.meta.LastFlush, adopt.SlotConfirmed)
				l.meta.Position = max(l.meta.Position, adopt.SlotConfirmed)
			}
			var err error
			if removed, err = compactTx(tx, now, l.cfg); err != nil {
				return err
			}
			if !fresh {
				clean := "after a crash"
				if !l.meta.CleanShutdown.IsZero() {
					clean = "after a clean shutdown"
				}
				if upgraded < SchemaVersion {
					clean += fmt.Sprintf("; file upgraded from schema version %d to %d (record checksums)", upgraded, SchemaVersion)
				}
				if err := j.add(Event{Kind: EventRestarted, LSN: l.meta.LastFlush, Detail: fmt.Sprintf(
					"%s; %d leases extended to now+ttl, %d consumers expired before the restart, %d shapes evicted",
					clean, extended, len(gone), len(evicted))}); err != nil {
					return err
				}
			}
			m := l.meta
			m.CleanShutdown = time.Time{}
			m.OpenedAt = now
			if err := putMeta(tx, m); err != nil {
				return err
			}
			l.meta = m
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("starting ledger %s: %w", l.cfg.Path, err)
	}
	l.persistedFlush = max(l.persistedFlush, l.meta.LastFlush)
	l.durableSafe = max(l.durableSafe, l.meta.LastFlush)
	l.startFloor = max(l.startFloor, l.meta.Position)
	if adopt != nil {
		l.log.Warn().Str("slot", adopt.Slot).Str("mismatch", string(adopt.Mismatch)).
			Stringer("file_flush_lsn", adopt.FileFlush).Stringer("confirmed_flush_lsn", adopt.SlotConfirmed).
			Int("live_shapes", adopt.LiveShapes).Msg("adopted a slot whose history this ledger file does not hold; every consumer must resynchronise")
	}
	for _, c := range l.consumers {
		c.leaseClear = false
		l.leaseChanged(c)
	}
	if hashed > 0 {
		l.log.Info().Int("consumers", hashed).Msg("lease tokens stored in the clear by an older version replaced by their hashes")
	}
	for i, s := range evicted {
		l.dropShape(s, tss[i])
	}
	l.forgetTombstones(removed)
	if len(gone) > 0 {
		l.log.Warn().Int("consumers", len(gone)).Int("shapes_evicted", len(evicted)).
			Msg("consumers whose lease expired before the restart are gone")
	}
	return nil
}

// forgetTombstones drops compacted tombstones from memory. Caller holds mu or
// owns the ledger exclusively.
func (l *Ledger) forgetTombstones(removed []Tombstone) {
	l.tombCount -= len(removed)
	for _, ts := range removed {
		if cur, ok := l.tombs[ts.Shape]; ok && cur.Generation == ts.Generation {
			delete(l.tombs, ts.Shape)
		}
	}
}

// compactTx deletes tombstones older than the retention (keeping their
// generation in the generations bucket, so the id never comes back at an
// evicted generation: I4) and trims the journal.
func compactTx(tx *bolt.Tx, now time.Time, cfg Config) ([]Tombstone, error) {
	cutoff := now.Add(-cfg.TombstoneRetention)
	var removed []Tombstone
	tb := tx.Bucket(bucketTombstones)
	gb := tx.Bucket(bucketGenerations)
	var dead [][]byte
	err := tb.ForEach(func(k, v []byte) error {
		ts, err := readTomb(k, v, true)
		if err != nil {
			return err
		}
		if ts.At.Before(cutoff) {
			removed = append(removed, ts)
			dead = append(dead, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, ts := range removed {
		g, err := get(gb, []byte(ts.Shape), true)
		if err != nil {
			return nil, fmt.Errorf("generation of %q: %w", ts.Shape, err)
		}
		if len(g) != 8 || binary.BigEndian.Uint64(g) < ts.Generation {
			if err := put(gb, []byte(ts.Shape), u64(ts.Generation)); err != nil {
				return nil, err
			}
		}
		if err := tb.Delete(dead[i]); err != nil {
			return nil, err
		}
	}
	if _, err := trimJournal(tx, now, cfg.JournalMaxEvents, cfg.JournalMaxAge); err != nil {
		return nil, err
	}
	return removed, nil
}

// RecordTick records a reconcile pass at now: the restart rules use the last
// recorded tick to tell leases that expired before a crash from leases that
// merely could not be renewed while ledgerd was down (I5). The tick goes
// through the group commit (behind every heartbeat applied before it) and
// RecordTick returns once it is committed. About once a minute it also
// compacts tombstones past retention and trims the journal.
func (l *Ledger) RecordTick(now time.Time) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	b := l.fill
	if now.After(b.tick) {
		b.tick = now
	}
	l.queued()
	l.mu.Unlock()
	<-b.done
	if b.err != nil {
		return fmt.Errorf("recording reconcile tick: %w", b.err)
	}
	return l.compact(now)
}

// compact runs compactTx when the last compaction is older than a minute.
func (l *Ledger) compact(now time.Time) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if !l.lastCompact.IsZero() && now.Sub(l.lastCompact) < compactEvery {
		return nil
	}
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	purge := l.expiredConsumers(now)
	var removed []Tombstone
	err := guard(func() error {
		return l.db.Update(func(tx *bolt.Tx) error {
			var err error
			if removed, err = compactTx(tx, now, l.cfg); err != nil {
				return err
			}
			bk := tx.Bucket(bucketConsumers)
			for _, id := range purge {
				if err := bk.Delete([]byte(id)); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("compacting ledger: %w", err)
	}
	l.lastCompact = now
	l.mu.Lock()
	l.forgetTombstones(removed)
	for _, id := range purge {
		delete(l.consumers, id)
	}
	l.mu.Unlock()
	if len(purge) > 0 {
		l.log.Info().Int("consumers", len(purge)).Dur("retention", l.cfg.ConsumerRetention).
			Msg("deleted the records of consumers gone longer than the retention")
	}
	return nil
}

// purgeBatch bounds the consumer records one compaction deletes, so that a
// backlog (a week of short-lived consumers) is worked off over a few passes
// instead of in one long write transaction.
const purgeBatch = 1000

// expiredConsumers returns up to purgeBatch consumers gone for longer than
// Config.ConsumerRetention. Without this every registration of a new id
// would stay in the file for ever. A gone consumer owns no shape (its shapes
// were evicted, with their tombstones, in the transaction that ended it, so
// I4 does not rest on this record), and Register, the only way back, waits
// for writeMu, which the caller holds. An id registering again after its
// record is gone starts at epoch 1: fencing rests on the random lease token,
// which no earlier process holds.
func (l *Ledger) expiredConsumers(now time.Time) []string {
	cutoff := now.Add(-l.cfg.ConsumerRetention)
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for id, c := range l.consumers {
		if c.Gone && c.GoneAt.Before(cutoff) {
			out = append(out, id)
			if len(out) == purgeBatch {
				break
			}
		}
	}
	return out
}
