package main

import (
	"context"
	"fmt"

	"github.com/ledgerd/ledgerd/api/wire"
)

type exportCommand struct{ app *App }

// Export is the whole ledger as JSON. Consumers' lease tokens are left out:
// they are fencing credentials, and nothing an operator reads needs them.
type Export struct {
	Source     SourceInfo       `json:"source"`
	Meta       LedgerMeta       `json:"meta"`
	Consumers  []ConsumerView   `json:"consumers"`
	Shapes     []ShapeView      `json:"shapes"`
	Tombstones []wire.Tombstone `json:"tombstones"`
	Events     []wire.Event     `json:"events"`
}

func (c *exportCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.app.commandFlags("export", args, ""); err != nil {
		return err
	}
	src, err := c.app.load(ctx, false)
	if err != nil {
		return err
	}
	st := src.State
	ex := Export{Source: src.info(), Meta: metaView(st.Meta), Consumers: []ConsumerView{}, Shapes: []ShapeView{},
		Tombstones: []wire.Tombstone{}, Events: []wire.Event{}}
	for _, x := range st.Consumers {
		ex.Consumers = append(ex.Consumers, consumerView(x))
	}
	for _, x := range st.Shapes {
		ex.Shapes = append(ex.Shapes, shapeView(x))
	}
	for _, x := range st.Tombstones {
		ex.Tombstones = append(ex.Tombstones, wire.TombstoneOf(x))
	}
	for _, x := range st.Events {
		ex.Events = append(ex.Events, wire.EventOf(x))
	}
	if err := writeJSON(c.app.env.Stdout, ex); err != nil {
		return fmt.Errorf("writing the export: %w", err)
	}
	return nil
}
