package main

import (
	"errors"
	"fmt"
)

// errProblemsFound is returned by verify when it found a violation (exit 1).
var errProblemsFound = errors.New("problems found")

// usageError is bad usage (exit 2); its message says how to call the command.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}
