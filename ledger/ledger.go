package ledger

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// corruptFix is the advice for a damaged file. Moving it away and starting
// afresh would forget the slot's history (I1, I4): that takes -adopt-slot.
const corruptFix = "restore it from a backup; without one, a new ledger file on the same slot needs -adopt-slot (" + adoptCost + ")"

// lockTimeout bounds the wait for the file lock held by another process.
const lockTimeout = time.Second

// compactEvery is the minimum time between two compactions of tombstones and
// the journal triggered by RecordTick.
const compactEvery = time.Minute

// Acks are journaled sampled: at most one "acked" event per shape per
// ackEventEvery, and at most ackEventsPerWindow of them per ackEventEvery in
// all, so a million busy shapes cannot push evictions and restarts out of the
// bounded journal (at the default bound it holds about 16 hours of acks
// alone). A shape's last ack is always in its own record.
const (
	ackEventEvery      = time.Minute
	ackEventsPerWindow = 100
)

// Ledger is the durable flush ledger: live shapes and consumers in memory,
// mirrored in a bbolt file. All methods are safe for concurrent use.
//
// Two locks: mu guards memory and is never held across I/O; writeMu
// serialises the structural changes (registrations, shape creation,
// evictions, restart) that each commit their own bbolt transaction before
// being applied to memory.
type Ledger struct {
	cfg   Config
	log   zerolog.Logger
	clock Clock
	db    *bolt.DB

	writeMu     sync.Mutex
	lastCompact time.Time // guarded by writeMu

	snapMu sync.Mutex // one snapshot built at a time (snapshot.go)

	mu         sync.Mutex
	closed     bool
	t          *tracker
	consumers  map[string]*Consumer
	tombs      map[string]Tombstone // latest tombstone per shape id
	tombCount  int                  // tombstone records stored, every generation (TombstoneCount)
	meta       Meta
	startFloor LSN // processed position persisted before this open: new shapes start at least there

	// streams counts the change streams open per consumer, for one lease
	// epoch (OpenStream, CloseStream); in memory only.
	streams map[string]openStreams

	changing *change // the eviction or consumer end being committed, if any (see change)

	leases  leaseHeap // min-heap of lease ends of the consumers whose lease can run out (index.go)
	watches []*Watch  // change feeds (index.go)

	// group commit (see commit.go)
	fill           *batch
	inflight       *batch
	durableSafe    LSN       // safe LSN of the last committed batch cut (I6)
	persistedFlush LSN       // meta.LastFlush as committed; what FlushLSN reports
	lastCommit     time.Time // when the last group commit ended (FlushRecordGap)
	stats          Stats
	ackEvWindow    int64 // unix nanoseconds when the current ack-event window began
	ackEvCount     int   // ack events journaled in the current window
	kick           chan struct{}
	full           chan struct{}
	stop           chan struct{}
	done           chan struct{}

	// ackEvents are the shapes given an ack event within the last
	// ackEventEvery, and when: at most two windows' worth, kept here
	// rather than in each of a million shapes.
	ackEvents map[*shapeState]int64

	failure commitFailure // the current run of failed group commits (see commit.go)
	fault   func() error  // tests only: fails writes as a full disk would; guarded by mu

	evictions map[Reason]uint64 // shapes evicted since Open, by reason (Stats.Evictions)
}

// Open opens or creates the ledger file, loads its state and applies the
// restart rules (I5): consumers whose lease had expired before the last
// recorded tick (or clean shutdown) are marked gone and their shapes evicted
// as expired_before_restart; every other live lease is extended to now+TTL.
//
// It fails with *ForeignError for a file bound to another system or slot,
// ErrCorrupt for a file that is not a readable ledger (not bbolt, truncated,
// failing bbolt's consistency check, or holding records that do not decode),
// ErrSchema for a newer layout, ErrLocked when another process holds the
// file, ErrEmptyFile for an existing 0-byte file and *SlotError when
// Config.Slot shows that the file does not hold the slot's history (both
// unless Config.AdoptSlot). On any of these the file is left unchanged.
//
// Config.Identity must name the system and the slot; a new file is bound to
// them. Position starts at zero after Open: the stream replays from the
// slot's confirmed_flush_lsn and Track re-creates what is pending. New
// shapes start no lower than the processed position recorded in the file
// or Config.SlotConfirmedFlush.
func Open(cfg Config) (*Ledger, error) {
	cfg = cfg.withDefaults()
	if cfg.Path == "" {
		return nil, fmt.Errorf("%w: Config.Path is empty: give the ledger file", ErrInvalid)
	}
	if cfg.Identity.SystemID == "" || cfg.Identity.Slot == "" {
		return nil, fmt.Errorf("%w: Config.Identity needs SystemID and Slot: the file is bound to them", ErrInvalid)
	}
	if fi, err := os.Stat(cfg.Path); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 && !cfg.AdoptSlot {
		return nil, fmt.Errorf("opening ledger %s: %w: whatever it held is gone, tombstones included, so evicted "+
			"shapes could come back; restore the file from a backup (or point -db at it), or remove it if no ledgerd "+
			"ever ran on it; to start a new ledger in it anyway, run with -adopt-slot (%s)", cfg.Path, ErrEmptyFile, adoptCost)
	}
	db, err := openBolt(cfg.Path, false)
	if err != nil {
		return nil, err
	}
	l := &Ledger{
		cfg: cfg, log: cfg.Logger, clock: cfg.Clock, db: db,
		t:         newTracker(),
		consumers: make(map[string]*Consumer),
		tombs:     make(map[string]Tombstone),
		kick:      make(chan struct{}, 1),
		full:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	l.fill = newBatch(1)
	removeSnapshotTemps(cfg.Path)
	fresh, err := l.load()
	var adopt *SlotError
	if err == nil {
		l.startFloor = max(l.startFloor, cfg.SlotConfirmedFlush)
		if adopt = l.checkSlot(fresh); adopt != nil && !cfg.AdoptSlot {
			err = adopt
		}
	}
	if err == nil {
		err = l.start(fresh, adopt)
	}
	if err != nil {
		_ = db.Close()
		if errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w; %s (inspect verify shows the damage)", err, corruptFix)
		}
		return nil, err
	}
	if fresh {
		l.log.Warn().Str("path", cfg.Path).Str("slot", cfg.Identity.Slot).Str("system_id", cfg.Identity.SystemID).
			Msg("created a new ledger file")
	}
	go l.run()
	return l, nil
}

// openBolt opens the file, turning bbolt's failures into the ledger's errors.
func openBolt(path string, readOnly bool) (*bolt.DB, error) {
	if readOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("opening ledger %s: %w", path, err)
		}
	}
	var db *bolt.DB
	var file *os.File
	opts := &bolt.Options{Timeout: lockTimeout, ReadOnly: readOnly,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		}}
	err := guard(func() error {
		if err := precheckSize(path); err != nil {
			return err
		}
		var err error
		db, err = bolt.Open(path, 0o600, opts)
		return err
	})
	if err != nil && file != nil {
		// bbolt closes the file when it fails, but not when it panics on a
		// damaged page (its freelist, say). Its memory map then keeps the open
		// file alive, and with it the lock: release the lock explicitly, or the
		// file would stay locked for the life of the process.
		releaseLock(file)
		_ = file.Close()
	}
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		if readOnly {
			return nil, fmt.Errorf("%w (%s)", ErrLocked, path)
		}
		return nil, fmt.Errorf("%w: %s is held by another process; stop it or use another -db file", ErrLocked, path)
	case errors.Is(err, ErrCorrupt):
		return nil, fmt.Errorf("opening ledger %s: %w; %s", path, err, corruptFix)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return nil, fmt.Errorf("opening ledger %s: %w: %v; %s",
			path, ErrCorrupt, err, corruptFix)
	default:
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("opening ledger %s: %w", path, err)
		}
		// bbolt reports short or damaged files with plain errors.
		return nil, fmt.Errorf("opening ledger %s: %w: %v; %s",
			path, ErrCorrupt, err, corruptFix)
	}
}

// Close commits what is queued, writes the clean-shutdown marker and closes
// the file. Calls made afterwards return ErrClosed.
func (l *Ledger) Close() error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done

	l.mu.Lock()
	// Changes whose last commit failed are lost with the process; none of
	// them was reported durable, but the caller should know.
	failed := l.failure.err
	m := l.meta
	m.LastFlush = l.persistedFlush
	m.Position = max(l.t.position, l.startFloor)
	m.CleanShutdown = l.clock.Now()
	fault := l.fault
	l.mu.Unlock()
	err := guard(func() error {
		return l.db.Update(func(tx *bolt.Tx) error {
			if fault != nil {
				if err := fault(); err != nil {
					return err
				}
			}
			return putMeta(tx, m)
		})
	})
	if cerr := l.db.Close(); err == nil {
		err = cerr
	}
	if err == nil && failed != nil {
		err = fmt.Errorf("the last group commit failed, changes made since the last successful one were not written: %w", failed)
	}
	if err != nil {
		return fmt.Errorf("closing ledger %s: %w", l.cfg.Path, err)
	}
	return nil
}

// change is an eviction or the end of a consumer that was decided under mu
// and is being committed to the file without it. Until its outcome is known,
// acks of the shapes it evicts and heartbeats of their consumer wait for it:
// answered before the decision, they are seen by it (EvictIf,
// ExpireConsumerIf look again under mu); answered after, they get the
// outcome (a heartbeat's answer lists the shape as evicted). None is
// accepted and then evicted anyway (I4). writeMu allows one change at a
// time.
type change struct {
	consumer string              // the consumer ended, or whose shape is evicted
	shapes   map[string]struct{} // the shapes being evicted
	done     chan struct{}
}

// beginChange marks a decided change as being committed. Caller holds mu
// and writeMu.
func (l *Ledger) beginChange(consumer string, shapes []*shapeState) *change {
	c := &change{consumer: consumer, shapes: make(map[string]struct{}, len(shapes)), done: make(chan struct{})}
	for _, s := range shapes {
		c.shapes[s.id] = struct{}{}
	}
	l.changing = c
	return c
}

// endChange releases whoever waits for c. Caller holds mu.
func (l *Ledger) endChange(c *change) {
	l.changing = nil
	close(c.done)
}

// waitShape waits while an eviction of the shape is being committed, and
// reports whether it had to. Caller holds mu; it is released while waiting.
func (l *Ledger) waitShape(id string) bool {
	c := l.changing
	if c == nil {
		return false
	}
	if _, ok := c.shapes[id]; !ok {
		return false
	}
	l.park(c)
	return true
}

// waitConsumer waits while the end of the consumer, or an eviction of one of
// its shapes, is being committed, and reports whether it had to. Caller holds mu; it is released while waiting.
func (l *Ledger) waitConsumer(id string) bool {
	c := l.changing
	if c == nil || c.consumer != id {
		return false
	}
	l.park(c)
	return true
}

func (l *Ledger) park(c *change) {
	if testHookParked != nil {
		testHookParked()
	}
	l.mu.Unlock()
	<-c.done
	l.mu.Lock()
}

// Test hooks: testHookCommit runs when an eviction or the end of a consumer
// has been decided and its bbolt transaction is about to start;
// testHookParked runs when an ack or heartbeat waits for such a commit.
var testHookCommit, testHookParked func()

// now returns the clock's time.
func (l *Ledger) now() time.Time { return l.clock.Now() }

// mono returns the monotonic clock's reading, or the wall clock's when the
// Clock has no monotonic reading.
func (l *Ledger) mono() time.Duration {
	if mc, ok := l.clock.(MonotonicClock); ok {
		return mc.Monotonic()
	}
	return time.Duration(l.clock.Now().UnixNano())
}
