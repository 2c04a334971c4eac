// Package wire holds the JSON bodies of ledgerd's HTTP API v1 (docs/api.md): the
// requests and answers of every call, the NDJSON stream frames, and the error
// object with its codes. The daemon and the Go client both use it, so the two
// cannot drift apart. It depends on nothing but the ledger's LSN type.
//
// LSNs travel in Postgres's text form ("0/16B3748"). Times are RFC 3339.
package wire
