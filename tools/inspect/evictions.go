package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

type evictionsCommand struct{ app *App }

// EvictionsReport is the answer of "inspect evictions".
type EvictionsReport struct {
	Source     SourceInfo      `json:"source"`
	Tombstones []TombstoneView `json:"tombstones"`
}

// TombstoneView is an eviction record.
type TombstoneView struct {
	Shape      string    `json:"shape"`
	Generation uint64    `json:"generation"`
	Consumer   string    `json:"consumer"`
	Reason     string    `json:"reason"`
	Evidence   string    `json:"evidence,omitempty"`
	Actor      string    `json:"actor,omitempty"`
	At         time.Time `json:"at"`
	FlushedLSN string    `json:"flushed_lsn"`
}

func tombstoneView(t ledger.Tombstone) TombstoneView {
	return TombstoneView{Shape: t.Shape, Generation: t.Generation, Consumer: t.Consumer, Reason: string(t.Reason),
		Evidence: t.Evidence, Actor: t.Actor, At: t.At.UTC(), FlushedLSN: t.FlushedLSN.String()}
}

func (c *evictionsCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.app.commandFlags("evictions", args, ""); err != nil {
		return err
	}
	src, err := c.app.load(ctx, false)
	if err != nil {
		return err
	}
	rep := EvictionsReport{Source: src.info(), Tombstones: []TombstoneView{}}
	for _, t := range src.State.Tombstones {
		rep.Tombstones = append(rep.Tombstones, tombstoneView(t))
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

func writeTombstones(w io.Writer, ts []TombstoneView) error {
	t := newTable(w)
	t.row("  AT", "SHAPE", "GEN", "CONSUMER", "REASON", "ACTOR", "FLUSHED", "EVIDENCE")
	for _, x := range ts {
		t.row("  "+x.At.Format(time.RFC3339), x.Shape, fmt.Sprint(x.Generation), x.Consumer, x.Reason, orDash(x.Actor), x.FlushedLSN, orDash(x.Evidence))
	}
	return t.flush()
}
