// Package deliver hands routed transactions to consumers (docs/api.md, "The change stream").
//
// Hub implements stream.Handler. For every decoded transaction it asks the
// router which shapes it reaches, lets the ledger track it (ledger.Track
// drops shapes that already acked it, I2) and appends it to the outbox of
// each consumer that owns one of the remaining shapes. A transaction that
// reaches no shape is accounted at once by Track with an empty list, so an
// idle or untracked table never holds the slot (I3).
//
// Before routing a transaction, the Hub reads the relation messages it
// carries: a shape bound to a relation that one shows renamed, or without a
// column the shape's filter names, is evicted as relation_changed (actor
// "stream") and its consumer gets an evicted frame. That happens in WAL
// order: the shape got every transaction before the change and gets none
// after it.
//
// A large transaction arrives from the stream in pieces and is routed piece
// by piece; a consumer's changes of it are sent as several txn frames
// (parts) of about Config.FragmentBytes, and it is tracked as pending from
// the first routed piece (I1). See fragment.go for how parts are counted
// against the outbox, spilled once written, and resent whole.
//
// An outbox holds the transactions delivered to a consumer and not yet acked
// by all its shapes, bounded in bytes. Its NDJSON stream (Serve) writes them
// in commit order; a reconnecting consumer is sent the whole outbox again, so
// it gets every unacked transaction once more and nothing it acked (an acked
// shape is removed from the entry before it is resent).
//
// Backpressure: when an outbox is full, HandleTxn (and so the reading of the
// slot) waits for acks up to Config.SlowConsumerTimeout. Past it the
// consumer's stream is closed and its outbox marked overflowed: later
// transactions for it are dropped from memory, never from the ledger, where
// they stay pending and hold the flush (I1). Once the consumer has caught up
// the Hub asks for a replay from the slot (Replay); Runner, which runs the
// replication stream, then starts a fresh stream.Stream at the slot's
// confirmed position, and the replayed transactions fill the gap in order
// (the others are recognised and skipped). Memory therefore stays bounded by
// the outbox size whatever a consumer does.
package deliver
