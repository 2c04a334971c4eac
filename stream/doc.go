// Package stream reads ledgerd's logical replication slot.
//
// A Stream owns one replication connection (pgoutput protocol version 1 with
// logical messages), checked before use: wal_level, privileges, publication
// and slot, each failure a *CheckError naming the fix. It starts at the
// slot's confirmed_flush_lsn, decodes pgoutput into committed transactions
// (Txn) and hands them, in commit order, to a Handler; a large transaction
// in pieces as it is decoded (Config.ChunkBytes), so that none is held
// whole in memory.
//
// What it confirms to Postgres is only ever Handler.FlushLSN(): the position
// the ledger has made safe, never a position merely received (I1, I6: docs/api.md, "Guarantees").
// Status updates go out at least every StatusInterval and whenever the server
// asks for one. When nothing is open and everything received has been
// handled, keepalives report the server's WAL end to Handler.Idle so an idle
// slot can advance to it; a periodic pg_logical_emit_message heartbeat gives
// an idle database on a busy cluster a transaction of its own (I3).
//
// Run reconnects with capped exponential backoff after any failure (walsender
// terminated, Postgres restarted) and resumes from the slot's confirmed
// position, handing no transaction twice within one process.
//
// One goroutine (Run's) owns the connection; while HandleTxn blocks it lends
// it to a ticker that keeps status updates going, so backpressure never
// trips wal_sender_timeout. While catching up on a backlog, the socket is
// read outside the runtime's poller (see blockconn_linux.go) and reads are
// coalesced (see coalesce.go) so the client's wake-ups do not take the CPU
// the walsender needs, and a Handler that is also a Batcher is told when
// the stream has handed over everything it read, to do once per batch
// what it would otherwise do per transaction. The Decoder is usable on its
// own; it never panics on malformed input.
package stream
