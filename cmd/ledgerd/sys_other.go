//go:build !unix

package main

// withUmask runs f; there is no umask here.
func withUmask(_ int, f func() error) error { return f() }

// fdLimit is unknown here.
func fdLimit() (int64, bool) { return 0, false }
