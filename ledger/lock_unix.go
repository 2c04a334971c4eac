//go:build unix

package ledger

import (
	"os"
	"syscall"
)

// releaseLock drops the advisory lock bbolt took on f.
func releaseLock(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
