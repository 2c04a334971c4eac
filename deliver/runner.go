package deliver

import (
	"context"
	"sync/atomic"

	"github.com/ledgerd/ledgerd/stream"
)

// Runner runs the replication stream that feeds a Hub, starting a fresh
// stream.Stream whenever the Hub asks for a replay from the slot: a Stream
// never hands a transaction twice, so only a new one reads the slot again
// from its confirmed position.
type Runner struct {
	hub   *Hub
	cfg   stream.Config
	cur   atomic.Pointer[stream.Stream]
	prior atomic.Uint64 // sessions of the streams replaced so far
}

// NewRunner returns a Runner for the stream configuration cfg.
func (h *Hub) NewRunner(cfg stream.Config) *Runner {
	r := &Runner{hub: h, cfg: cfg}
	h.nudge.Store(&r.cur)
	h.batched.Store(true) // its streams call EndBatch
	return r
}

// Streaming reports whether the stream is streaming now (readiness).
func (r *Runner) Streaming() bool {
	s := r.cur.Load()
	return s != nil && s.Stats().Streaming
}

// Reconnects returns how many times a replication session was started
// after the first one, replays included.
func (r *Runner) Reconnects() uint64 {
	n := r.prior.Load()
	if s := r.cur.Load(); s != nil {
		n += s.Stats().Sessions
	}
	if n > 0 {
		n--
	}
	return n
}

// Run streams until ctx is done (nil, after the stream's final status
// update) or the stream fails for good (stream.IsTerminal).
func (r *Runner) Run(ctx context.Context) error {
	cfg := r.cfg
	for {
		st, err := stream.New(cfg, r.hub)
		if err != nil {
			return err
		}
		if old := r.cur.Swap(st); old != nil {
			r.prior.Add(old.Stats().Sessions)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- st.Run(runCtx) }()
		select {
		case err := <-done:
			cancel()
			return err
		case <-r.hub.Replay():
			r.hub.log.Info().Msg("restarting the stream to replay from the slot")
			cancel()
			if err := <-done; err != nil {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
			r.hub.streamRestarted()
			// Creating is for the first start only: a slot or publication
			// that disappeared later must be reported, not silently recreated.
			cfg.CreateSlot, cfg.CreatePublication = false, ""
		}
	}
}
