package reconcile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// ProcessProber tells whether a registered process still runs.
type ProcessProber interface {
	// Probe reports whether pid runs and, when start is not empty, started
	// at start (the same form StartTime returns). gone=false with a nil
	// error means alive; an error means it could not tell, and nothing is
	// decided on it. evidence says what was seen.
	Probe(pid int, start string) (gone bool, evidence string, err error)
}

// ProcFS probes processes through /proc of this host (Linux). A process's
// start time is field 22 of /proc/<pid>/stat (clock ticks since boot), as a
// decimal string: a consumer that registers it lets a pid reused by another
// process be told apart.
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

// StartTime returns the start time of pid as recorded in /proc/<pid>/stat;
// an error wrapping fs.ErrNotExist means no such process.
func (p ProcFS) StartTime(pid int) (string, error) {
	_, start, err := p.stat(pid)
	return start, err
}

func (p ProcFS) stat(pid int) (state, start string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", p.root(), pid))
	if err != nil {
		return "", "", err
	}
	return parseStat(string(b))
}

// parseStat returns field 3 (state) and field 22 (starttime) of a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may itself hold spaces and parentheses, so fields are counted after the
// last ')'.
func parseStat(stat string) (state, start string, err error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return "", "", fmt.Errorf("reading process start time: malformed stat line %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return "", "", fmt.Errorf("reading process start time: stat line has %d fields after the name, want at least 20", len(f))
	}
	if _, err := strconv.ParseUint(f[19], 10, 64); err != nil {
		return "", "", fmt.Errorf("reading process start time: field 22 %q is not a number", f[19])
	}
	return f[0], f[19], nil
}

// Probe implements ProcessProber.
func (p ProcFS) Probe(pid int, start string) (bool, string, error) {
	if pid <= 0 {
		return false, "", fmt.Errorf("probing pid %d: not a process id", pid)
	}
	state, got, err := p.stat(pid)
	if errors.Is(err, fs.ErrNotExist) {
		return true, fmt.Sprintf("pid %d not found in %s", pid, p.root()), nil
	}
	if err != nil {
		return false, "", fmt.Errorf("probing pid %d: %w", pid, err)
	}
	if state == "Z" || state == "X" {
		return true, fmt.Sprintf("pid %d has exited (state %s)", pid, state), nil
	}
	if start != "" && got != start {
		return true, fmt.Sprintf("pid %d started at %s, registered start %s (pid reused)", pid, got, start), nil
	}
	return false, fmt.Sprintf("pid %d running, start %s", pid, got), nil
}
