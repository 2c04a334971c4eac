// Package client is the Go client of ledgerd's HTTP API v1 (docs/api.md), for
// consumer processes.
//
// A Client talks to one daemon (http://host:port or unix:/path). Register
// returns a Consumer holding a lease; the Consumer creates shapes, reads its
// NDJSON change stream and acks. Run does it all: it keeps the lease alive
// with heartbeats, reads the stream, calls the handler for each transaction
// in commit order, acks what the handler accepted in batches (one request in
// flight, the next one carrying everything handled meanwhile), and
// reconnects with backoff after a broken stream. The stream is read while
// the handler runs, so the daemon's challenges are answered (with a defer
// for shapes whose transactions are still being handled) however long a
// handler takes: a slow handler is not a stalled consumer. After a reconnect the
// daemon sends again every transaction not yet acked, so a handler sees each
// transaction at least once and, once its ack was answered, never again.
//
// A transaction larger than the daemon's -fragment-bytes comes as several
// txn frames of the same LSN (Txn.Part from 1, Txn.Last on the final one).
// Run puts them together and calls the handler once per transaction;
// RunParts calls it for each part, so that the consumer's memory stays
// bounded whatever a transaction's size, and acks after the last part. A
// stream that breaks inside a transaction is followed by the whole
// transaction again from part 1.
//
// Lower-level calls (OpenStream, Ack, Heartbeat) are there for consumers
// that manage acks themselves.
package client
