// Package ledger is ledgerd's durable flush ledger: the state that decides
// which WAL position is safe to confirm to Postgres, kept in one bbolt file,
// together with the in-memory tracker that computes it.
//
// The ledger knows consumers (leased client processes), shapes (subscriptions
// owned by a consumer) and, for every shape, the commit LSNs of transactions
// handed to it and not yet acknowledged. From these it derives the safe flush
// LSN (docs/api.md, "Concepts"): the smallest pending commit LSN over all shapes, or, with
// nothing pending, the end of the last processed transaction (or the idle
// server WAL end).
//
// What is durable and why:
//
//   - Per shape: definition, generation, start and flushed LSN. The flushed
//     LSN lets the stream skip transactions a shape already acked after
//     Postgres replays from an older confirmed_flush_lsn (I2).
//   - Tombstones of evicted shapes, written in the same bbolt transaction that
//     removes the shape, so an eviction can never be undone by a crash (I4).
//   - Consumers with their leases, plus a liveness tick written every
//     reconcile pass: on start the ledger evicts only consumers whose lease
//     had run out before that tick and extends every other lease, so ledgerd's
//     own downtime never evicts a healthy consumer (I5). A lease token is
//     stored only as its SHA-256: the file and its snapshots let nobody ack
//     in a consumer's place (lease.go).
//   - The last flush position reported to Postgres, so it never goes
//     backwards across restarts (I6). It also binds the file to its slot's
//     history: the slot's confirmed_flush_lsn can never pass it, so Open
//     (given Config.Slot) refuses a new file against a slot that exists and a
//     file the slot has moved past, unless Config.AdoptSlot (I1, I4).
//
// Every record carries a CRC-32C of its key and value (schema version 2, see
// seal.go), checked whenever it is read: bbolt checks its page structure but
// not the bytes of a value, and a changed flushed LSN would confirm the slot
// past transactions nobody acked (I1). Open upgrades a version-1 file in one
// transaction; Load and Verify read it as it is.
//
// Pending entries are deliberately not persisted: after a restart the stream
// replays from the slot's confirmed_flush_lsn, which is never beyond any
// pending entry (I1, I6), and Track re-creates them.
//
// Acks are applied in memory at once and made durable by group commit: one
// goroutine writes every queued ack of a batch in a single bbolt transaction.
// FlushLSN only offers a position whose supporting acks are committed (I6).
//
// Readers that keep their own view of the ledger (the reconciler, the hub's
// router) need not copy it every time: a Watch reports the consumers and
// shapes that changed, the lease ends are kept in a min-heap
// (ExpiredConsumers), and the shapes are indexed by owner and by relation
// (index.go). Shapes with the same table, relation and filter share one
// definition.
//
// The package has no HTTP and no Postgres dependency; it can be embedded in
// another Go service. Load and Verify read a file without changing it, for
// the inspect tool.
package ledger
