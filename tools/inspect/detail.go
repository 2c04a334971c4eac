package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

type shapeCommand struct{ app *App }
type consumerCommand struct{ app *App }

// ShapeReport is the answer of "inspect shape ID".
type ShapeReport struct {
	Source     SourceInfo       `json:"source"`
	Shape      *ShapeView       `json:"shape"`             // nil when evicted or unknown
	Live       *Holder          `json:"pending,omitempty"` // daemon (or derived) pending state
	Tombstones []wire.Tombstone `json:"tombstones"`
	History    []wire.Event     `json:"history"`
}

// ConsumerReport is the answer of "inspect consumer ID".
type ConsumerReport struct {
	Source   SourceInfo       `json:"source"`
	Consumer ConsumerView     `json:"consumer"`
	Lease    LeaseState       `json:"lease"`
	Shapes   []ShapeView      `json:"shapes"`
	Evicted  []wire.Tombstone `json:"evicted_shapes"`
	History  []wire.Event     `json:"history"`
}

func (c *shapeCommand) Run(ctx context.Context, args []string) error {
	id, err := c.app.commandFlags("shape", args, "ID")
	if err != nil {
		return err
	}
	src, err := c.app.load(ctx, false)
	if err != nil {
		return err
	}
	rep := ShapeReport{Source: src.info(), Tombstones: []wire.Tombstone{}, History: []wire.Event{}}
	if sh, ok := src.shape(id); ok {
		v := shapeView(sh)
		rep.Shape = &v
	}
	for _, h := range holders(src, c.app.g.Policy) {
		if h.Shape == id {
			rep.Live = &h
			break
		}
	}
	for _, t := range src.State.Tombstones {
		if t.Shape == id {
			rep.Tombstones = append(rep.Tombstones, wire.TombstoneOf(t))
		}
	}
	journaled := false
	for _, e := range src.State.Events {
		if e.Shape == id {
			rep.History = append(rep.History, wire.EventOf(e))
			journaled = journaled || e.Kind == ledger.EventShapeCreated
		}
	}
	if sh, ok := src.shape(id); ok && !journaled {
		// Creations are not journaled one by one; the record says when.
		created := wire.Event{Time: sh.CreatedAt.UTC(), Kind: ledger.EventShapeCreated, Consumer: sh.Consumer, Shape: id,
			LSN: sh.StartLSN.String(), Detail: fmt.Sprintf("generation %d, table %s (from the shape's record)", sh.Generation, sh.Table)}
		rep.History = append([]wire.Event{created}, rep.History...)
	}
	if rep.Shape == nil && len(rep.Tombstones) == 0 && len(rep.History) == 0 {
		return fmt.Errorf("shape %q is not in the ledger (neither live, evicted nor in the journal): check the id with inspect export", id)
	}
	if c.app.g.JSON {
		return writeJSON(c.app.env.Stdout, rep)
	}
	return rep.writeText(c.app.env.Stdout, id)
}

func (r ShapeReport) writeText(w io.Writer, id string) error {
	fmt.Fprintln(w, r.Source.Line)
	if s := r.Shape; s != nil {
		fmt.Fprintf(w, "shape %s (generation %d)\n", s.ID, s.Generation)
		t := newTable(w)
		t.row("  consumer", s.Consumer)
		t.row("  table", s.Table)
		t.row("  filter", filterText(s.Filter))
		t.row("  created", tsp(s.CreatedAt))
		t.row("  start LSN", s.StartLSN)
		t.row("  flushed LSN", s.FlushedLSN+"  (durable)")
		t.row("  last ack", tsp(s.LastAckAt))
		if h := r.Live; h != nil {
			kind := "pending (daemon)"
			if !h.Certain {
				kind = "possibly pending (derived from the file)"
			}
			t.row("  state", kind)
			if h.PendingLSN != "" {
				t.row("  pending LSN", h.PendingLSN+"  (since "+tsp(h.PendingSince)+")")
			}
			t.row("  pinned bytes", h.bytesText())
			t.row("  lease", h.Lease.Text)
			t.row("  reconciler", h.Next.What)
		} else {
			t.row("  state", "not pending")
		}
		if err := t.flush(); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(w, "shape %s is not live\n", id)
	}
	if len(r.Tombstones) > 0 {
		fmt.Fprintln(w, "tombstones:")
		writeTombstones(w, r.Tombstones)
	}
	fmt.Fprintln(w, "history:")
	return writeEvents(w, r.History)
}

func (c *consumerCommand) Run(ctx context.Context, args []string) error {
	id, err := c.app.commandFlags("consumer", args, "ID")
	if err != nil {
		return err
	}
	src, err := c.app.load(ctx, false)
	if err != nil {
		return err
	}
	cn, ok := src.consumer(id)
	if !ok {
		return fmt.Errorf("consumer %q is not in the ledger: check the id with inspect export", id)
	}
	rep := ConsumerReport{Source: src.info(), Consumer: consumerView(cn), Lease: leaseState(src, id),
		Shapes: []ShapeView{}, Evicted: []wire.Tombstone{}, History: []wire.Event{}}
	for _, sh := range src.State.Shapes {
		if sh.Consumer == id {
			rep.Shapes = append(rep.Shapes, shapeView(sh))
		}
	}
	for _, t := range src.State.Tombstones {
		if t.Consumer == id {
			rep.Evicted = append(rep.Evicted, wire.TombstoneOf(t))
		}
	}
	for _, e := range src.State.Events {
		if e.Consumer == id {
			rep.History = append(rep.History, wire.EventOf(e))
		}
	}
	if c.app.g.JSON {
		return writeJSON(c.app.env.Stdout, rep)
	}
	return rep.writeText(c.app.env.Stdout)
}

func (r ConsumerReport) writeText(w io.Writer) error {
	fmt.Fprintln(w, r.Source.Line)
	c := r.Consumer
	fmt.Fprintf(w, "consumer %s (epoch %d)\n", c.ID, c.Epoch)
	t := newTable(w)
	t.row("  lease", r.Lease.Text)
	t.row("  ttl", c.TTL)
	t.row("  host / pid", fmt.Sprintf("%s / %d", orDash(c.Host), c.PID))
	t.row("  registered", tsp(c.RegisteredAt))
	t.row("  last heartbeat", tsp(c.LastHeartbeat))
	if c.Inventory != nil {
		t.row("  inventory", fmt.Sprintf("%v at %s", c.Inventory, tsp(c.InventoryAt)))
	}
	t.row("  shapes", fmt.Sprint(len(r.Shapes)))
	if err := t.flush(); err != nil {
		return err
	}
	if len(r.Shapes) > 0 {
		t := newTable(w)
		t.row("  SHAPE", "TABLE", "FLUSHED", "LAST ACK")
		for _, s := range r.Shapes {
			t.row("  "+s.ID, s.Table, s.FlushedLSN, tsp(s.LastAckAt))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(r.Evicted) > 0 {
		fmt.Fprintln(w, "evicted shapes:")
		writeTombstones(w, r.Evicted)
	}
	fmt.Fprintln(w, "history:")
	return writeEvents(w, r.History)
}

// ShapeView is a shape's durable record.
type ShapeView struct {
	ID         string              `json:"id"`
	Consumer   string              `json:"consumer"`
	Table      string              `json:"table"`
	Filter     map[string][]string `json:"filter,omitempty"`
	Generation uint64              `json:"generation"`
	StartLSN   string              `json:"start_lsn"`
	FlushedLSN string              `json:"flushed_lsn"`
	CreatedAt  *time.Time          `json:"created_at,omitempty"`
	LastAckAt  *time.Time          `json:"last_ack_at,omitempty"`
}

func shapeView(s ledger.Shape) ShapeView {
	return ShapeView{ID: s.ID, Consumer: s.Consumer, Table: s.Table, Filter: s.Filter, Generation: s.Generation,
		StartLSN: s.StartLSN.String(), FlushedLSN: s.FlushedLSN.String(), CreatedAt: tp(s.CreatedAt), LastAckAt: tp(s.LastAckAt)}
}

// ConsumerView is a consumer's record, without its lease token (a fencing
// credential).
type ConsumerView struct {
	ID            string     `json:"id"`
	Epoch         uint64     `json:"epoch"`
	TTL           string     `json:"ttl"`
	PID           int        `json:"pid,omitempty"`
	ProcStart     string     `json:"proc_start,omitempty"`
	Host          string     `json:"host,omitempty"`
	RegisteredAt  *time.Time `json:"registered_at,omitempty"`
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
	PrevHeartbeat *time.Time `json:"prev_heartbeat,omitempty"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	Streaming     bool       `json:"streaming"`
	Gone          bool       `json:"gone"`
	GoneReason    string     `json:"gone_reason,omitempty"`
	GoneAt        *time.Time `json:"gone_at,omitempty"`
	Inventory     []string   `json:"inventory,omitempty"`
	InventoryAt   *time.Time `json:"inventory_at,omitempty"`
}

func consumerView(c ledger.Consumer) ConsumerView {
	return ConsumerView{ID: c.ID, Epoch: c.Epoch, TTL: c.TTL.String(), PID: c.PID, ProcStart: c.ProcStart, Host: c.Host,
		RegisteredAt: tp(c.RegisteredAt), LastHeartbeat: tp(c.LastHeartbeat), PrevHeartbeat: tp(c.PrevHeartbeat),
		ExpiresAt: tp(c.ExpiresAt), Streaming: c.Streaming, Gone: c.Gone, GoneReason: string(c.GoneReason),
		GoneAt: tp(c.GoneAt), Inventory: c.Inventory, InventoryAt: tp(c.InventoryAt)}
}

func writeEvents(w io.Writer, evs []wire.Event) error {
	if len(evs) == 0 {
		fmt.Fprintln(w, "  (no journal events)")
		return nil
	}
	t := newTable(w)
	for _, e := range evs {
		seq := "  -" // not a journal event: derived from a record
		if e.Seq != 0 {
			seq = fmt.Sprintf("  #%d", e.Seq)
		}
		t.row(seq, ts(e.Time), e.Kind, subject(e.Consumer, e.Shape), orDash(e.LSN), orDash(e.Reason), e.Detail)
	}
	return t.flush()
}

func subject(consumer, shape string) string {
	switch {
	case shape != "" && consumer != "":
		return "shape " + shape + " (" + consumer + ")"
	case shape != "":
		return "shape " + shape
	case consumer != "":
		return "consumer " + consumer
	}
	return "-"
}

func filterText(f map[string][]string) string {
	if len(f) == 0 {
		return "none (every row)"
	}
	s := ""
	for i, k := range sortedKeys(f) {
		if i > 0 {
			s += " AND "
		}
		s += fmt.Sprintf("%s IN %v", k, f[k])
	}
	return s
}
