package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// socketMode is the mode of the API's unix socket: the daemon's user and
// group may connect, nobody else, whatever the umask.
const socketMode = 0o660

// listenUnix listens on a unix socket at path. A socket another process
// still serves is refused: taking it over would make that daemon
// unreachable, and a second ledgerd that then failed would remove the path
// on its way out. A socket nobody serves any more (connection refused) is a
// leftover of a process that is gone and is replaced. Anything else at path
// is left alone.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("-listen unix:%s: the path exists and is not a socket; remove it or choose another path", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("-listen unix:%s: a running process serves this socket (it accepts connections); stop it or choose another path", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("-listen unix:%s: checking whether a running process serves the socket: %w; remove it if none does", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("-listen unix:%s: removing the socket of a process that is gone: %w", path, err)
		}
	}
	var ln net.Listener
	err := withUmask(0o777&^socketMode, func() error {
		var err error
		ln, err = net.Listen("unix", path)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("-listen unix:%s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // Close removes the path only if it is still ours
	fi, err := os.Lstat(path)
	if err == nil {
		err = os.Chmod(path, socketMode)
	}
	if err != nil {
		_ = ul.Close()
		return nil, fmt.Errorf("-listen unix:%s: setting the socket's mode: %w", path, err)
	}
	return &unixListener{UnixListener: ul, path: path, created: fi}, nil
}

// unixListener removes its socket on Close only if the path still holds the
// socket it created.
type unixListener struct {
	*net.UnixListener
	path    string
	created os.FileInfo
	once    sync.Once
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.created) {
			_ = os.Remove(l.path)
		}
	})
	return err
}
