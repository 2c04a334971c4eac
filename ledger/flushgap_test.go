package ledger_test

import (
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestFlushRecordsAreSpaced: under traffic no shape follows, the safe
// position moves with every transaction. Recording it for Postgres costs
// at most one commit (and fsync) per FlushRecordGap, not one per
// transaction, and the latest position is still recorded, within a gap
// (I3). Fake time (synctest): commits are counted, not timed.
func TestFlushRecordsAreSpaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, err := ledger.Open(testConfig(filepath.Join(t.TempDir(), "ledger.db"), nil))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		synctest.Wait()
		before := l.Stats().Commits

		// 300 transactions reaching no shape, one a millisecond, each
		// followed by a status update's FlushLSN.
		var end ledger.LSN
		for i := range 300 {
			commit := ledger.LSN(0x10000 + i*0x100)
			end = commit + 0x10
			l.Track(commit, end, nil)
			l.FlushLSN()
			time.Sleep(time.Millisecond)
		}
		synctest.Wait()
		// 300ms: the first record at once, then one a gap (100ms).
		if n := l.Stats().Commits - before; n > 4 {
			t.Errorf("%d commits to record the flush position of 300 transactions over 300ms, want at most 4", n)
		}
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if got := l.FlushLSN(); got != end {
			t.Errorf("flush position %s a gap after the last transaction, want its end %s", got, end)
		}
	})
}
