package reconcile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// ProcessProber reads a process's start time on this host.
type ProcessProber interface {
	// StartTime returns the start time of the process with id pid, in a
	// form that differs between two processes that had the same pid. An
	// error wrapping ErrNoProcess means no process runs with that pid; any
	// other error means it could not tell, and nothing is decided on it.
	StartTime(pid int) (string, error)
}

// ErrNoProcess is returned (wrapped) by a ProcessProber when no process runs
// with the pid, or only a zombie is left of it.
var ErrNoProcess = errors.New("reconcile: no such process")

// ProcFS probes processes through /proc of this host (Linux). A process's
// start time is field 22 of /proc/<pid>/stat (clock ticks since boot), as a
// decimal string.
type ProcFS struct {
	// Root is the proc mount; empty means /proc.
	Root string
}

func (p ProcFS) root() string {
	if p.Root == "" {
		return "/proc"
	}
	return p.Root
}

// StartTime implements ProcessProber.
func (p ProcFS) StartTime(pid int) (string, error) {
	if pid <= 0 {
		return "", fmt.Errorf("probing pid %d: not a process id", pid)
	}
	path := fmt.Sprintf("%s/%d/stat", p.root(), pid)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: pid %d (%s not found)", ErrNoProcess, pid, path)
	}
	if err != nil {
		return "", fmt.Errorf("probing pid %d: %w", pid, err)
	}
	state, start, err := parseStat(string(b))
	if err != nil {
		return "", fmt.Errorf("probing pid %d: %w", pid, err)
	}
	if state == "Z" || state == "X" {
		return "", fmt.Errorf("%w: pid %d has exited (state %s)", ErrNoProcess, pid, state)
	}
	return start, nil
}

// parseStat returns field 3 (state) and field 22 (starttime) of a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may itself hold spaces and parentheses, so fields are counted after the
// last ')'.
func parseStat(stat string) (state, start string, err error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return "", "", fmt.Errorf("malformed stat line %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return "", "", fmt.Errorf("stat line has %d fields after the name, want at least 20", len(f))
	}
	if _, err := strconv.ParseUint(f[19], 10, 64); err != nil {
		return "", "", fmt.Errorf("stat field 22 (starttime) %q is not a number", f[19])
	}
	return f[0], f[19], nil
}
