// Package api is ledgerd's HTTP API v1 (docs/api.md, api/openapi.yaml): consumer registration and
// leases, shapes, the NDJSON change stream, acks, read-only views of the
// ledger, the debug snapshot, Prometheus metrics and health probes.
//
// Every handler validates before it changes anything: a body over 1 MiB is
// 413, malformed JSON, unknown fields and malformed LSNs are 400, a wrong
// bearer token 401, a missing, wrong or stale Ledger-Lease 403, and errors
// are always the JSON object {"error": code, "message": text}; no input
// reaches the ledger unless it is valid, so none can corrupt it.
//
// Limits (see Limits) keep one client from costing everyone else: ids follow
// one printable rule, filters, values and registration fields are bounded
// (422 with a code naming the limit), and so are the shapes of a consumer
// and the consumers holding a lease (429). Lists are paged. Every 500 answer
// is logged with its cause.
//
// A 200 answer to an ack is sent only after the ack is durable in the ledger
// (deliver.Hub.Ack waits for the group commit), so a consumer may discard
// what it acked as soon as it has the answer (I2, I6). An open change stream
// holds the consumer's lease (ledger.OpenStream, counted per lease).
//
// The wire bodies live in package api/wire, shared with the Go client. PG
// answers the questions the API asks Postgres (does a table exist, what does
// pg_replication_slots say); tests may pass their own.
package api
