package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
)

type evictionsCommand struct{ app *App }

// EvictionsReport is the answer of "inspect evictions".
type EvictionsReport struct {
	Source     SourceInfo       `json:"source"`
	Tombstones []wire.Tombstone `json:"tombstones"`
}

func (c *evictionsCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.app.commandFlags("evictions", args, ""); err != nil {
		return err
	}
	src, err := c.app.load(ctx, false)
	if err != nil {
		return err
	}
	rep := EvictionsReport{Source: src.info(), Tombstones: []wire.Tombstone{}}
	for _, t := range src.State.Tombstones {
		rep.Tombstones = append(rep.Tombstones, wire.TombstoneOf(t))
	}
	// Newest first: the recent evictions are the ones asked about.
	sort.SliceStable(rep.Tombstones, func(i, j int) bool {
		a, b := rep.Tombstones[i], rep.Tombstones[j]
		if !a.At.Equal(b.At) {
			return a.At.After(b.At)
		}
		return a.Shape < b.Shape
	})
	if c.app.g.JSON {
		return writeJSON(c.app.env.Stdout, rep)
	}
	fmt.Fprintln(c.app.env.Stdout, rep.Source.Line)
	if len(rep.Tombstones) == 0 {
		fmt.Fprintln(c.app.env.Stdout, "no evictions in the ledger (tombstones are kept for the retention, default 7 days)")
		return nil
	}
	return writeTombstones(c.app.env.Stdout, rep.Tombstones)
}

func writeTombstones(w io.Writer, ts []wire.Tombstone) error {
	t := newTable(w)
	t.row("  AT", "SHAPE", "GEN", "CONSUMER", "REASON", "ACTOR", "FLUSHED", "EVIDENCE")
	for _, x := range ts {
		t.row("  "+x.At.Format(time.RFC3339), x.Shape, fmt.Sprint(x.Generation), x.Consumer, x.Reason, orDash(x.Actor), x.FlushedLSN, orDash(x.Evidence))
	}
	return t.flush()
}
