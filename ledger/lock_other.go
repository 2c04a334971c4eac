//go:build !unix

package ledger

import "os"

// releaseLock is a no-op where bbolt does not use flock.
func releaseLock(*os.File) {}
