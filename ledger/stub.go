package ledger

import (
	"context"
	"errors"
	"io"
	"time"
)

var errTODO = errors.New("ledger: not implemented yet")

// Ledger is the durable flush ledger. All methods are safe for concurrent use.
type Ledger struct{}

// Open opens or creates the ledger file and applies the restart rules (I5).
func Open(cfg Config) (*Ledger, error) { return nil, errTODO }

// Close commits what is queued, writes the clean-shutdown marker and closes the file.
func (l *Ledger) Close() error { return nil }

func (l *Ledger) Register(spec ConsumerSpec) (Consumer, error) { return Consumer{}, errTODO }
func (l *Ledger) Heartbeat(id, lease string, inventory []string) (Consumer, error) {
	return Consumer{}, errTODO
}
func (l *Ledger) CheckLease(id, lease string) error { return errTODO }
func (l *Ledger) SetStreaming(id string, open bool) {}
func (l *Ledger) Release(id, lease string) error    { return errTODO }
func (l *Ledger) ExpireConsumer(id string, reason Reason, evidence string) error {
	return errTODO
}
func (l *Ledger) Consumer(id string) (Consumer, bool) { return Consumer{}, false }
func (l *Ledger) Consumers() []Consumer               { return nil }

func (l *Ledger) PutShape(spec ShapeSpec) (sh Shape, created bool, err error) {
	return Shape{}, false, errTODO
}
func (l *Ledger) Shape(id string) (Shape, bool) { return Shape{}, false }
func (l *Ledger) Shapes() []Shape               { return nil }
func (l *Ledger) DeleteShape(id string) error   { return errTODO }
func (l *Ledger) Evict(id string, reason Reason, evidence, actor string) (Tombstone, error) {
	return Tombstone{}, errTODO
}
func (l *Ledger) Tombstone(id string) (Tombstone, bool) { return Tombstone{}, false }
func (l *Ledger) Tombstones() []Tombstone               { return nil }

func (l *Ledger) Track(commit, end LSN, shapes []string) []string { return nil }
func (l *Ledger) Idle(walEnd LSN)                                 {}
func (l *Ledger) Ack(shape string, lsn LSN) error                 { return errTODO }
func (l *Ledger) Sync(ctx context.Context) error                  { return errTODO }
func (l *Ledger) SafeLSN() LSN                                    { return 0 }
func (l *Ledger) FlushLSN() LSN                                   { return 0 }
func (l *Ledger) Holders(n int) []Shape                           { return nil }
func (l *Ledger) Position() LSN                                   { return 0 }

func (l *Ledger) RecordTick(now time.Time) error { return errTODO }

func (l *Ledger) Events(since uint64, limit int) []Event   { return nil }
func (l *Ledger) WriteSnapshot(w io.Writer) (int64, error) { return 0, errTODO }
func Load(path string) (*State, error)                     { return nil, errTODO }
func Verify(path string) ([]Problem, error)                { return nil, errTODO }
