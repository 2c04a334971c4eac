package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

// Where a figure comes from; printed next to it so the operator knows how
// far to trust it.
const (
	fromFile     = "file"     // the ledger file (durable state only)
	fromSnapshot = "snapshot" // the daemon's /v1/debug/snapshot (same as the file)
	fromDaemon   = "daemon"   // the daemon's live memory (/v1/status, /v1/shapes?holding=1)
	fromPG       = "postgres" // pg_replication_slots and friends, read now
	fromDerived  = "derived"  // inferred from the file: a candidate, not a certainty
)

// Source is everything a command may look at: the ledger state (always),
// the daemon's live views (with -url) and Postgres (with -pg).
type Source struct {
	Kind   string // fromFile or fromSnapshot
	Where  string // the file path or the daemon URL
	State  *ledger.State
	Daemon *DaemonView // nil without -url
	PG     *PGState    // nil without -pg
	Now    time.Time
	// Problems are ledger.Verify's findings (verify only).
	Problems []ledger.Problem
	// KeyOnly lists, with -pg, the tables whose deletes lack a column
	// their shapes filter on; KeyOnlyErr says why it could not be read.
	KeyOnly    []wire.KeyOnlyTable
	KeyOnlyErr string

	consumerIdx, shapeIdx map[string]int
}

// DaemonView is what the running daemon said besides the snapshot. Err is
// set (and the views empty) when those calls failed; the snapshot still
// answers.
type DaemonView struct {
	Status  *wire.Status
	Holding []wire.Shape
	Err     string
}

// load reads the ledger from -db or -url, and Postgres with -pg. Errors name
// the fix; they end the command with exit status 2. With verify, the file
// (or the daemon's snapshot) is also checked with ledger.Verify.
//
// With -url, Postgres and the daemon's live views are read before the
// snapshot: the daemon's reported flush only grows, so a slot position read
// first can never look ahead of the snapshot's last reported flush.
func (a *App) load(ctx context.Context, verify bool) (*Source, error) {
	src := &Source{Now: a.env.Now().UTC()}
	if a.g.URL != "" {
		d, err := a.newDaemonClient()
		if err != nil {
			return nil, err
		}
		src.Daemon = d.views(ctx)
		slot := ""
		if src.Daemon.Status != nil {
			slot = src.Daemon.Status.Slot
		}
		if a.g.PG != "" && slot != "" {
			if src.PG, err = readPG(ctx, a.g.PG, slot); err != nil {
				return nil, err
			}
		}
		path, cleanup, err := d.snapshot(ctx)
		if err != nil {
			return nil, err
		}
		defer cleanup()
		st, err := ledger.Load(path)
		if err != nil {
			return nil, fmt.Errorf("reading the snapshot of %s: %w; the daemon sent a file that is not a readable ledger", a.g.URL, err)
		}
		src.Kind, src.Where, src.State = fromSnapshot, a.g.URL, st
		if verify {
			if src.Problems, err = ledger.Verify(path); err != nil {
				return nil, fmt.Errorf("verifying the snapshot of %s: %w", a.g.URL, err)
			}
		}
	} else {
		st, err := loadFile(a.g.DB)
		if err != nil && verify && errors.Is(err, ledger.ErrCorrupt) {
			// A damaged record keeps the state from loading, but verify
			// can still say which records are damaged: that is its job.
			if probs, verr := ledger.Verify(a.g.DB); verr == nil && len(probs) > 0 {
				return &Source{Now: src.Now, Kind: fromFile, Where: a.g.DB, State: &ledger.State{}, Problems: probs}, nil
			}
		}
		if err != nil {
			return nil, err
		}
		src.Kind, src.Where, src.State = fromFile, a.g.DB, st
		if verify {
			if src.Problems, err = ledger.Verify(a.g.DB); err != nil {
				return nil, fmt.Errorf("%w; check that -db names a ledgerd ledger file", err)
			}
		}
	}
	if a.g.PG != "" && src.PG == nil {
		pg, err := readPG(ctx, a.g.PG, src.State.Meta.Identity.Slot)
		if err != nil {
			return nil, err
		}
		src.PG = pg
	}
	if src.PG != nil {
		var err error
		if src.KeyOnly, err = readKeyOnly(ctx, a.g.PG, src.State.Shapes); err != nil {
			src.KeyOnlyErr = err.Error()
		}
	}
	return src, nil
}

// loadFile is ledger.Load with errors that say what to do.
func loadFile(path string) (*ledger.State, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("ledger file %s does not exist: point -db at ledgerd's ledger file (its -db flag), or ask a running daemon with -url http://127.0.0.1:7070", path)
		}
		return nil, fmt.Errorf("cannot read ledger file %s: %w; check the path and its permissions", path, err)
	}
	st, err := ledger.Load(path)
	switch {
	case err == nil:
		return st, nil
	case errors.Is(err, ledger.ErrLocked):
		return nil, fmt.Errorf("ledger file %s is locked by a running ledgerd: ask the daemon instead with -url http://127.0.0.1:7070 (its -listen address)", path)
	case errors.Is(err, ledger.ErrCorrupt):
		return nil, fmt.Errorf("%w; run inspect -db %s verify for details, or point -db at the right file", err, path)
	default:
		return nil, fmt.Errorf("%w; check that -db names a ledgerd ledger file", err)
	}
}

// sourceLine says where the figures of an answer come from.
func (s *Source) sourceLine() string {
	line := "source: ledger file " + s.Where + " (durable state; pending positions are not in the file)"
	if s.Kind == fromSnapshot {
		line = "source: daemon " + s.Where + " (snapshot"
		if s.Daemon != nil && s.Daemon.Err == "" {
			line += " + live status and holders"
		} else if s.Daemon != nil {
			line += "; live views unavailable: " + s.Daemon.Err
		}
		line += ")"
	}
	if s.PG != nil {
		line += "; postgres read now"
	}
	return line
}

// SourceInfo says in answers where their figures come from.
type SourceInfo struct {
	Kind      string `json:"kind"`  // file or snapshot
	Where     string `json:"where"` // the file path or the daemon URL
	Live      bool   `json:"live"`  // the daemon's live status and holders were read
	LiveError string `json:"live_error,omitempty"`
	Postgres  bool   `json:"postgres"` // Postgres was read now (-pg)
	Line      string `json:"-"`        // the same, for people
}

func (s *Source) info() SourceInfo {
	in := SourceInfo{Kind: s.Kind, Where: s.Where, Postgres: s.PG != nil, Line: s.sourceLine()}
	if s.Daemon != nil {
		in.Live, in.LiveError = s.Daemon.Status != nil && s.Daemon.Err == "", s.Daemon.Err
	}
	return in
}

// consumer returns the consumer with id from the state.
func (s *Source) consumer(id string) (ledger.Consumer, bool) {
	s.index()
	i, ok := s.consumerIdx[id]
	if !ok {
		return ledger.Consumer{}, false
	}
	return s.State.Consumers[i], true
}

// shape returns the live shape with id from the state.
func (s *Source) shape(id string) (ledger.Shape, bool) {
	s.index()
	i, ok := s.shapeIdx[id]
	if !ok {
		return ledger.Shape{}, false
	}
	return s.State.Shapes[i], true
}

// index builds the id lookups once (a ledger may hold a million shapes).
func (s *Source) index() {
	if s.consumerIdx != nil {
		return
	}
	s.consumerIdx = make(map[string]int, len(s.State.Consumers))
	for i, c := range s.State.Consumers {
		s.consumerIdx[c.ID] = i
	}
	s.shapeIdx = make(map[string]int, len(s.State.Shapes))
	for i, sh := range s.State.Shapes {
		s.shapeIdx[sh.ID] = i
	}
}

// daemonRunning says whether a daemon is known to be using the ledger: true
// for -url; for a file, false (Load succeeded, so nobody holds its lock).
func (s *Source) daemonRunning() bool { return s.Kind == fromSnapshot }
