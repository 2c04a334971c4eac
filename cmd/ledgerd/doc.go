// Command ledgerd is the sidecar daemon: it owns a Postgres logical
// replication slot, fans committed transactions out to leased consumers'
// shapes over HTTP, and confirms to Postgres only what every live shape has
// durably acked (README.md, docs/api.md, docs/operations.md).
//
// Every flag has an environment equivalent: -pg-url is LEDGERD_PG_URL (the
// flag name upper-cased, '-' as '_'); a flag given on the command line wins.
// Run "ledgerd -h" for the list.
//
// Start-up: the replication stream's preflight (stream.Setup) identifies
// the Postgres system and finds the slot without creating it, then the
// ledger file is opened and locked, bound to that identity and refused when
// it does not hold the slot's history (unless -adopt-slot), then a missing
// slot is created (-create-slot) and the file bound to it; a start that
// fails before the stream first streams drops the slot it created. Then
// the API listens, the stream runs and the reconciler (package
// reconcile) passes every -reconcile-interval: it records the liveness
// tick, evicts what no live consumer holds, audits the slot and brings
// delivery in step. The first SIGTERM or SIGINT
// drains: change streams close, queued acks are committed, a final status
// update confirms the last durable position and the ledger is closed; a
// second signal aborts at once.
//
// The package only wires the components together: flags and environment
// (config.go), logging, listening and signals.
package main
