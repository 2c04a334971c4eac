package deliver

import (
	"testing"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestAppendLSN: frames spell positions as ledger.LSN.String does.
func TestAppendLSN(t *testing.T) {
	for _, l := range []ledger.LSN{0, 1, 0xF, 0x10, 0x1A2B3C8, 0xFFFFFFFF, 0x1_00000000, 0x16_B374D848, 1<<64 - 1} {
		if got, want := string(appendLSN([]byte("x"), l)), "x"+l.String(); got != want {
			t.Errorf("appendLSN(%d) = %q, want %q", uint64(l), got, want)
		}
	}
}
