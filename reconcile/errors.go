package reconcile

import "errors"

// ErrNoLedger is returned by New when Config.Ledger is nil.
var ErrNoLedger = errors.New("reconcile: Config.Ledger is required; pass the daemon's *ledger.Ledger")
