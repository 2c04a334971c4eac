// Command inspect is the operator's tool for a ledgerd ledger (docs/operations.md, "inspect"): it
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
// -token-file, LEDGERD_TOKEN_FILE or LEDGERD_TOKEN. -pg adds the slot's row of
// pg_replication_slots, the WAL end, the other slots and the oldest running
// transaction.
//
// Commands: status, holders (-limit N), why, shape ID, consumer ID,
// evictions, verify, export. Every command takes -json (before or after the
// command). Exit status: 0 done, 1 a problem found (verify), 2 could not run
// (bad usage, unreadable or locked file, unreachable daemon), with a message
// that names the fix.
//
// Predictions. holders, why and shape say what the reconciler will do and
// when (docs/operations.md, "Liveness"): a lease that runs out is evicted as lease_expired at the
// next pass after its expiry; a shape pending stall-grace without ack
// progress is challenged and, without an ack or a defer, evicted as stalled
// challenge-timeout later; with the ledger file alone (ledgerd down) the
// restart rules of I5 apply at the next start. The daemon's timings are
// taken from -reconcile-interval, -stall-grace, -challenge-timeout and
// -max-shape-lag-bytes, which default to ledgerd's own defaults.
//
// Layout: main.go parses and dispatches; app.go holds the shared flags and
// plumbing; source.go loads the ledger, daemon.go and pg.go read the live
// sources; analysis.go derives holders and predicts the reconciler; one file
// per command (status, holders, why, detail for shape and consumer,
// evictions, verify, export) renders text or JSON to an io.Writer with an
// injected clock.
package main
