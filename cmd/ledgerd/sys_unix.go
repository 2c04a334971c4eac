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
