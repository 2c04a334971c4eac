package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// drainTimeout bounds the graceful shutdown after the first signal.
const drainTimeout = 4 * time.Second

func main() {
	ctx, stop := signalContext()
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "ledgerd:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// signalContext is cancelled by the first SIGTERM or SIGINT; a second one
// exits at once.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-ch
		cancel()
		<-ch
		fmt.Fprintln(os.Stderr, "ledgerd: second signal, aborting without draining")
		os.Exit(3)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

func newLogger(level string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("-log-level %q: use trace, debug, info, warn or error", level)
	}
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(path) // a stale socket of a previous run
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("-listen %s: %w", addr, err)
		}
		return l, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-listen %s: %w; pick a free host:port or unix:/path", addr, err)
	}
	return l, nil
}

func readToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("-token-file %s is empty: write the bearer token into it", path)
	}
	return tok, nil
}

// checkOnly is the handler of the stream used only for the preflight, which
// runs before the ledger can be opened (the ledger is bound to the system
// identity the preflight returns).
type checkOnly struct{}

func (checkOnly) HandleTxn(context.Context, *stream.Txn) error {
	return errors.New("preflight stream does not stream")
}
func (checkOnly) Idle(ledger.LSN)      {}
func (checkOnly) FlushLSN() ledger.LSN { return 0 }

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		fmt.Fprintln(stderr, "ledgerd:", err)
		return errUsage
	}
	log, err := newLogger(cfg.LogLevel, stderr)
	if err != nil {
		return err
	}
	token, err := readToken(cfg.TokenFile)
	if err != nil {
		return err
	}
	ln, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()

	hb := cfg.HeartbeatInterval
	if hb == 0 {
		hb = -1 // off
	}
	scfg := stream.Config{ConnString: cfg.PGURL, Slot: cfg.Slot, Publication: cfg.Publication,
		CreateSlot: cfg.CreateSlot, CreatePublication: cfg.CreatePublication,
		StatusInterval: cfg.StatusInterval, HeartbeatInterval: hb, Logger: log}

	sys, err := preflight(ctx, scfg, log)
	if ctx.Err() != nil {
		log.Info().Msg("signal received before the stream was checked: nothing to drain")
		return nil
	}
	if err != nil {
		return err
	}
	led, err := ledger.Open(ledger.Config{Path: cfg.DB, DefaultTTL: cfg.TTL, Logger: log,
		Identity: ledger.Identity{SystemID: sys.SystemID, Timeline: sys.Timeline, Database: sys.Database, Slot: cfg.Slot}})
	if err != nil {
		return err
	}
	ledgerClosed := false
	defer func() {
		if !ledgerClosed {
			_ = led.Close()
		}
	}()
	hub := deliver.New(deliver.Config{Ledger: led, OutboxBytes: int64(cfg.OutboxBytes),
		SlowConsumerTimeout: cfg.SlowConsumerTimeout, Logger: log})
	hub.Sync()

	pg, err := api.NewPG(ctx, cfg.PGURL, cfg.Slot, cfg.Publication)
	if err != nil {
		return err
	}
	defer pg.Close()

	streams := hub.NewRunner(scfg)
	srv := api.New(api.Config{Ledger: led, Hub: hub, Tables: pg, Slot: pg, SlotName: cfg.Slot, Token: token,
		Streaming: streams.Streaming, Reconnects: streams.Reconnects, Logger: log})
	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: nil, BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) }}
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.Serve(ln) }()
	log.Info().Str("listen", cfg.Listen).Str("slot", cfg.Slot).Str("system_id", sys.SystemID).
		Str("db", cfg.DB).Msg("ledgerd serving")

	streamCtx, stopStream := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStream()
	streamDone := make(chan error, 1)
	go func() { streamDone <- streams.Run(streamCtx) }()

	var wg sync.WaitGroup
	tickCtx, stopTicks := context.WithCancel(ctx)
	wg.Go(func() { tick(tickCtx, cfg.ReconcileInterval, led, hub, log) })

	var runErr error
	select {
	case <-ctx.Done():
		log.Info().Msg("signal received: draining")
	case err := <-streamDone:
		runErr = err
		streamDone <- err
		log.Error().Err(err).Msg("replication stream stopped")
	case err := <-httpDone:
		runErr = fmt.Errorf("API server: %w", err)
		httpDone <- err
	}
	stopTicks()
	wg.Wait()

	// Drain: end change streams, let in-flight calls finish, commit every
	// ack, confirm the last durable position, close the ledger.
	drainCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	hub.Close()
	if err := httpSrv.Shutdown(drainCtx); err != nil {
		_ = httpSrv.Close()
	}
	for range 3 { // FlushLSN records a newer safe position at the next commit
		_ = led.Sync(drainCtx)
		led.FlushLSN()
	}
	stopStream()
	select {
	case <-streamDone:
	case <-drainCtx.Done():
		log.Warn().Msg("the stream did not stop in time; the next start resumes from the slot")
	}
	ledgerClosed = true
	if err := led.Close(); err != nil {
		return fmt.Errorf("closing the ledger: %w", err)
	}
	log.Info().Stringer("flush_lsn", led.FlushLSN()).Msg("ledgerd stopped")
	return runErr
}

// preflight runs the stream's checks, retrying while Postgres is not
// reachable; a misconfiguration is returned at once.
func preflight(ctx context.Context, scfg stream.Config, log zerolog.Logger) (stream.System, error) {
	probe, err := stream.New(scfg, checkOnly{})
	if err != nil {
		return stream.System{}, err
	}
	backoff := 250 * time.Millisecond
	for {
		sys, err := probe.Check(ctx)
		if err == nil {
			return sys, nil
		}
		if stream.IsTerminal(err) || ctx.Err() != nil {
			return sys, err
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg("preflight failed, retrying")
		select {
		case <-ctx.Done():
			return sys, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// tick runs the periodic upkeep: the ledger's liveness tick (I5) and
// bringing delivery in step with evictions made by the reconciler.
func tick(ctx context.Context, every time.Duration, led *ledger.Ledger, hub *deliver.Hub, log zerolog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := led.RecordTick(now); err != nil && !errors.Is(err, ledger.ErrClosed) {
				log.Warn().Err(err).Msg("recording the liveness tick")
			}
			hub.Sync()
		}
	}
}
