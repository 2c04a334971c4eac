//go:build unix

package main

import (
	"sync"
	"syscall"
)

var umaskMu sync.Mutex

// withUmask runs f with the process umask set to mask, so that a file f
// creates never exists with a wider mode, even for an instant.
func withUmask(mask int, f func() error) error {
	umaskMu.Lock()
	defer umaskMu.Unlock()
	old := syscall.Umask(mask)
	defer syscall.Umask(old)
	return f()
}

// fdLimit returns the process's soft limit on open files.
func fdLimit() (int64, bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<40 {
		return 0, false
	}
	return int64(r.Cur), true
}
