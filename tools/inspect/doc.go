// Command inspect is the operator's tool for a ledgerd ledger (SPEC §7): it
// answers "why is my WAL not being released?" from the ledger file alone,
// from a running daemon, and with -pg from Postgres itself.
//
//	inspect [-db FILE | -url URL] [-pg URL] [-json] COMMAND [ARG]
//
// Sources. -db (default ledgerd.db) reads the file read-only through
// ledger.Load and never changes it; a file locked by a running daemon is
// refused with a hint to use -url. -url fetches the daemon's
// /v1/debug/snapshot into a temporary file and reads it the same way, and
// also reads /v1/status and /v1/shapes?holding=1 for what the file cannot
// hold: pending positions live only in the daemon's memory (they are rebuilt
// from the slot after a restart). Every figure printed says where it comes
// from (file, daemon, postgres, or derived). A bearer token is taken from
// LEDGERD_TOKEN or -token-file. -pg adds the slot's row of
// pg_replication_slots, the WAL end, the other slots and the oldest running
// transaction.
//
// Commands: status, holders, why, shape ID, consumer ID, evictions, verify,
// export. Every command takes -json. Exit status: 0 done, 1 a problem found
// (verify), 2 could not run (bad usage, unreadable file), with a message that
// names the fix.
//
// Layout: main.go parses and dispatches; source.go loads the ledger,
// daemon.go and pg.go read the live sources; analysis.go derives holders and
// predicts the reconciler; one file per command renders text or JSON to an
// io.Writer with an injected clock.
package main
