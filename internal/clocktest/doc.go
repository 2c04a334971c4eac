// Package clocktest provides a controlled clock for tests of time-dependent
// logic (leases, grace periods, stalls): time moves only when the test says
// so, which keeps such tests free of sleeps and timing thresholds.
package clocktest
