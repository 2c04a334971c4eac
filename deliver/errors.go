package deliver

import (
	"errors"
	"fmt"

	"github.com/ledgerd/ledgerd/ledger"
)

var (
	// ErrReplaced is returned by Serve when a newer stream of the same
	// consumer took over.
	ErrReplaced = errors.New("deliver: stream replaced by a newer connection of the same consumer")
	// ErrSlowConsumer is returned by Serve when the consumer did not read or
	// ack for longer than the slow-consumer timeout while its outbox was full;
	// reconnect and ack faster, or raise -outbox-bytes.
	ErrSlowConsumer = errors.New("deliver: stream closed: outbox full for longer than the slow-consumer timeout; ack faster or raise -outbox-bytes")
	// ErrRestarted is returned by Serve when a transaction some parts of
	// which were written to the stream must be sent again from its first
	// part (the replication stream was cut mid-transaction): the consumer
	// drops the parts it has and reconnects.
	ErrRestarted = errors.New("deliver: stream closed: a transaction is sent again from its first part; reconnect")
	// ErrConsumerGone is returned by Serve when the consumer lost its lease or
	// was released while streaming.
	ErrConsumerGone = errors.New("deliver: consumer is gone; register again")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("deliver: hub closed")
	// ErrNotOwner is returned by Ack for a shape that belongs to another
	// consumer or does not exist.
	ErrNotOwner = errors.New("deliver: shape is not a shape of this consumer")
	// ErrBeyondDelivered is returned (inside *BeyondError) for an ack past
	// what was written to the consumer's stream.
	ErrBeyondDelivered = errors.New("deliver: ack beyond what was delivered")
)

// BeyondError reports an ack past the last transaction written to the
// consumer's stream: the consumer claims to have flushed something it was
// never sent, and accepting it could release WAL it still needs (I1).
type BeyondError struct {
	Consumer  string
	Shape     string
	LSN       ledger.LSN
	Delivered ledger.LSN
}

func (e *BeyondError) Error() string {
	target := "consumer " + e.Consumer
	if e.Shape != "" {
		target = "shape " + e.Shape
	}
	return fmt.Sprintf("ack %s for %s is beyond the last transaction delivered (%s); ack only the lsn of a txn frame you received",
		e.LSN, target, e.Delivered)
}

// Unwrap returns ErrBeyondDelivered.
func (e *BeyondError) Unwrap() error { return ErrBeyondDelivered }
