package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"
)

type holdersCommand struct{ app *App }

// defaultHoldersLimit is how many holders are listed unless -limit says.
const defaultHoldersLimit = 50

// HoldersReport is the answer of "inspect holders".
type HoldersReport struct {
	Source  SourceInfo `json:"source"`
	Certain bool       `json:"certain"` // false: candidates derived from the file
	Holders []Holder   `json:"holders"`
	Total   int        `json:"total"` // holders found; Holders may list fewer (-limit)
	Note    string     `json:"note,omitempty"`
}

func (c *holdersCommand) Run(ctx context.Context, args []string) error {
	limit := defaultHoldersLimit
	if _, err := c.app.commandFlags("holders", args, "", func(fs *flag.FlagSet) {
		fs.IntVar(&limit, "limit", defaultHoldersLimit, "list at most this many holders, worst first (0 = all)")
	}); err != nil {
		return err
	}
	src, err := c.app.load(ctx, false)
	if err != nil {
		return err
	}
	rep := buildHolders(src, c.app.g.Policy)
	if limit > 0 && len(rep.Holders) > limit {
		rep.Holders = rep.Holders[:limit]
	}
	if c.app.g.JSON {
		return writeJSON(c.app.env.Stdout, rep)
	}
	return rep.writeText(c.app.env.Stdout)
}

func buildHolders(src *Source, p Policy) HoldersReport {
	rep := HoldersReport{Source: src.info(), Holders: holders(src, p)}
	if rep.Holders == nil {
		rep.Holders = []Holder{}
	}
	rep.Total = len(rep.Holders)
	rep.Certain = src.Daemon != nil && src.Daemon.Status != nil
	if !rep.Certain {
		m := src.State.Meta
		rep.Note = fmt.Sprintf("pending positions are not in the file: these are shapes whose durable flushed LSN is below the last reported flush %s "+
			"(processed position %s); each may hold it or may simply have received nothing since. Use -url for the daemon's live holders.",
			m.LastFlush, m.Position)
	}
	return rep
}

func (r HoldersReport) writeText(w io.Writer) error {
	fmt.Fprintln(w, r.Source.Line)
	if len(r.Holders) == 0 {
		if r.Certain {
			fmt.Fprintln(w, "no shape is pending: nothing in ledgerd pins WAL")
		} else {
			fmt.Fprintln(w, "no shape can be holding the flush: the last reported flush is at the processed position (or nothing was processed)")
		}
		return nil
	}
	if r.Note != "" {
		fmt.Fprintln(w, wrap("note: "+r.Note, 100))
	}
	for i, h := range r.Holders {
		fmt.Fprintln(w)
		kind := "holder"
		if !h.Certain {
			kind = "possible holder"
		}
		fmt.Fprintf(w, "%d. %s %s (consumer %s, table %s)\n", i+1, kind, h.Shape, h.Consumer, h.Table)
		t := newTable(w)
		t.row("   pinned bytes", h.bytesText())
		t.row("   pinned for", h.pinnedText())
		if h.PendingLSN != "" {
			t.row("   pending LSN", h.PendingLSN+"  (since "+tsp(h.PendingSince)+")")
		}
		t.row("   flushed LSN", h.FlushedLSN)
		t.row("   last ack", tsp(h.LastAck))
		t.row("   lease", h.Lease.Text)
		next := h.Next.What
		t.row("   reconciler", next)
		if err := t.flush(); err != nil {
			return err
		}
	}
	if n := r.Total - len(r.Holders); n > 0 {
		fmt.Fprintf(w, "\n... and %d more (inspect holders -limit 0 lists all)\n", n)
	}
	return nil
}

func (h Holder) bytesText() string {
	if h.PinnedBytes == nil {
		return h.BytesSource
	}
	return fmt.Sprintf("%s (%d)  [%s]", bytesText(*h.PinnedBytes), *h.PinnedBytes, h.BytesSource)
}

func (h Holder) pinnedText() string {
	switch h.PinnedFrom {
	case "pending_since":
		return dur(time.Duration(h.PinnedSeconds*float64(time.Second))) + "  [daemon: since pending]"
	case "last_ack":
		return "at most " + dur(time.Duration(h.PinnedSeconds*float64(time.Second))) + "  [derived: since its last ack]"
	case "created_at":
		return "at most " + dur(time.Duration(h.PinnedSeconds*float64(time.Second))) + "  [derived: since created, never acked]"
	}
	return "unknown"
}
