package ledger_test

import (
	"os"
	"testing"
)

// TestMain lets the crash test re-execute this test binary as the process it
// kills: with crashChildEnv set, the binary runs the child workload instead
// of the tests.
func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		os.Exit(crashChild(path))
	}
	os.Exit(m.Run())
}
