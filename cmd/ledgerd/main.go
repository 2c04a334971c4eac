package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/internal/cork"
	"github.com/ledgerd/ledgerd/internal/procs"
	"github.com/ledgerd/ledgerd/internal/sdnotify"
	"github.com/ledgerd/ledgerd/internal/version"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/reconcile"
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
		return listenUnix(path)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-listen %s: %w; pick a free host:port or unix:/path", addr, err)
	}
	return l, nil
}

// readToken reads the token of -flag from path. A file group or others may
// read is a token anyone on the host may read: it is used, with a warning.
func readToken(flag, path string, log zerolog.Logger) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("-%s: %w", flag, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("-%s %s is empty: write the bearer token into it", flag, path)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o044 != 0 {
		log.Warn().Str("file", path).Str("mode", fmt.Sprintf("%04o", fi.Mode().Perm())).
			Msgf("the -%s file is readable by group or others; chmod 600 it", flag)
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

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (retErr error) {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if errors.Is(err, errVersion) {
		fmt.Fprintf(os.Stdout, "ledgerd %s %s\n", version.String(), version.GoVersion())
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
	floor := gcFloor(getenv)
	defer startGCFloor(floor, log)()
	token, err := readToken("token-file", cfg.TokenFile, log)
	if err != nil {
		return err
	}
	adminToken, err := readToken("admin-token-file", cfg.AdminTokenFile, log)
	if err != nil {
		return err
	}
	if adminToken != "" && adminToken == token {
		return fmt.Errorf("-admin-token-file holds the same token as -token-file: give the admin calls a token of their own")
	}
	if token == "" && adminToken == "" && !strings.HasPrefix(cfg.Listen, "unix:") {
		log.Warn().Str("listen", cfg.Listen).Msg("no -token-file: whoever reaches the API may register, ack, evict and download the ledger")
	}
	ln, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	limits := defaultHTTPLimits(connCap(cfg.MaxConnections, log))

	// The API listens before Postgres is reached: /healthz answers while
	// ledgerd waits for it, /readyz says why it is not ready, and every
	// other call is 503 not_ready until the ledger file is open.
	gate := api.NewGate(api.GateConfig{Token: token, AdminToken: adminToken, Version: version.String()})
	httpSrv := newHTTPServer(ctx, gate, limits)
	httpDone := make(chan error, 1)
	go func() {
		httpDone <- httpSrv.Serve(limitListener(cork.Listener{Listener: rawListener{ln}}, limits.MaxConns))
	}()
	defer httpSrv.Close()
	log.Info().Str("listen", cfg.Listen).Str("version", version.String()).Msg("ledgerd listening; checking Postgres")

	notify := sdnotify.New(getenv)
	var loop loopHealth
	if period, ok := sdnotify.WatchdogInterval(getenv, os.Getpid()); ok && notify.Enabled() {
		wdCtx, stopWatchdog := context.WithCancel(ctx)
		defer stopWatchdog()
		stale := max(3*cfg.ReconcileInterval, period)
		go sdnotify.Watchdog(wdCtx, period, func() bool { return loop.healthy(stale) },
			func() { notifyOrWarn(notify, "WATCHDOG=1", log) })
	}
	if getenv("GOMAXPROCS") == "" {
		// One P while the daemon is quiet, all of them when it is busy
		// (internal/procs); an operator's GOMAXPROCS is left alone.
		procsCtx, stopProcs := context.WithCancel(ctx)
		procsDone := make(chan struct{})
		go func() {
			defer close(procsDone)
			procs.Run(procsCtx, procs.Config{Logger: log.With().Str("component", "procs").Logger()})
		}()
		defer func() {
			stopProcs()
			<-procsDone
		}()
	}
	notReady := func(reason string) {
		gate.NotReady(reason)
		notifyOrWarn(notify, "STATUS="+reason, log)
	}

	hb := cfg.HeartbeatInterval
	if hb == 0 {
		hb = -1 // off
	}
	scfg := stream.Config{ConnString: cfg.PGURL, Slot: cfg.Slot, Publication: cfg.Publication,
		CreateSlot: cfg.CreateSlot, CreatePublication: cfg.CreatePublication,
		StatusInterval: cfg.StatusInterval, HeartbeatInterval: hb, Logger: log}

	notReady("checking Postgres")
	setup, err := preflight(ctx, scfg, log, notReady)
	if ctx.Err() != nil {
		if setup != nil {
			setup.Done()
		}
		notifyOrWarn(notify, "STOPPING=1", log)
		log.Info().Msg("signal received before the stream was checked: nothing to drain")
		return nil
	}
	if err != nil {
		return err
	}
	// The start is complete once the stream first streams; a start that
	// fails before drops the slot it created (I3).
	defer func() {
		if retErr == nil {
			setup.Done()
			return
		}
		actx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		if err := setup.Abort(actx); err != nil {
			log.Error().Err(err).Msg("the slot created by this start is left behind")
		}
	}()
	// The stream starts before the API is served (see HoldTxns below):
	// READY=1 waits for both.
	streaming := make(chan struct{})
	var streamingOnce sync.Once
	scfg.OnStreaming = func() {
		setup.Done()
		streamingOnce.Do(func() { close(streaming) })
	}
	// Pieces of a large transaction are routed as decoded; a piece no larger
	// than a part keeps the parts' sizes close to -fragment-bytes.
	scfg.ChunkBytes = int(min(int64(cfg.FragmentBytes), stream.DefaultChunkBytes))
	scfg.CreateSlot = false // created below, once the ledger file is open and locked
	sys := setup.System
	notReady("opening the ledger file " + cfg.DB)
	resumeGC := pauseGC(floor) // until the router is filled
	defer resumeGC()
	// The ledger file is opened and locked before the slot is created, and
	// refused when it does not hold the slot's history (I1, I4).
	led, err := ledger.Open(ledger.Config{Path: cfg.DB, DefaultTTL: cfg.TTL, ConsumerRetention: cfg.ConsumerRetention, Logger: log,
		SlotConfirmedFlush: sys.ConfirmedFlush, Identity: ledger.Identity{SystemID: sys.SystemID, Timeline: sys.Timeline, Database: sys.Database, Slot: cfg.Slot},
		Slot:      &ledger.SlotInfo{Exists: setup.Slot.Exists, ConfirmedFlush: setup.Slot.ConfirmedFlush},
		AdoptSlot: cfg.AdoptSlot})
	if err != nil {
		return err
	}
	ledgerClosed := false
	defer func() {
		if !ledgerClosed {
			_ = led.Close()
		}
	}()
	if !setup.Slot.Exists {
		notReady("creating the slot " + cfg.Slot)
		at, err := setup.CreateSlot(ctx)
		if err != nil {
			return err
		}
		if err := led.SlotCreated(ctx, at); err != nil {
			return err
		}
	} else {
		setup.Done() // nothing to drop: free the walsender before the stream needs one
	}
	hub := deliver.New(deliver.Config{Ledger: led, OutboxBytes: int64(cfg.OutboxBytes),
		SlowConsumerTimeout: cfg.SlowConsumerTimeout, Logger: log, FragmentBytes: int64(cfg.FragmentBytes)})
	// The replication stream starts while the router is filled: the
	// connection is set up and Postgres decodes meanwhile, but the Hub
	// holds every transaction until the router holds every shape (I1).
	releaseTxns := hub.HoldTxns()
	streams := hub.NewRunner(scfg)
	streamCtx, stopStream := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStream()
	streamDone := make(chan error, 1)
	streamExited := make(chan struct{})
	go func() {
		streamDone <- streams.Run(streamCtx)
		close(streamExited)
	}()
	drained := false
	defer func() {
		// A start that fails from here stops the stream before the
		// ledger is closed and before a slot it created is dropped.
		if !drained {
			stopStream()
			select {
			case <-streamExited:
			case <-time.After(drainTimeout):
			}
		}
	}()
	hub.Sync()
	releaseTxns()
	resumeGC()

	pg, err := api.NewPG(ctx, cfg.PGURL, cfg.Slot, cfg.Publication)
	if err != nil {
		return err
	}
	defer pg.Close()

	audit, err := newSlotAudit(ctx, pg, cfg.PGURL, cfg.Slot)
	if err != nil {
		return err
	}
	defer audit.Close()
	fraction := cfg.EvictMaxFraction
	if fraction == 0 {
		fraction = math.SmallestNonzeroFloat64 // 0 = only the floor of 10 a minute
	}
	rec, err := reconcile.New(reconcile.Config{Ledger: led, Challenger: hub, Syncer: hub, Slot: audit, Catalog: catalog{audit.pool},
		Interval: cfg.ReconcileInterval, StallGrace: cfg.StallGrace, ChallengeTimeout: cfg.ChallengeTimeout,
		MaxShapeLagBytes: int64(cfg.MaxShapeLagBytes), EvictMaxFraction: fraction, Logger: log})
	if err != nil {
		return err
	}

	srv := api.New(api.Config{Ledger: led, Hub: hub, Tables: pg, Slot: pg, SlotName: cfg.Slot, Token: token, AdminToken: adminToken,
		Streaming: streams.Streaming, Reconnects: streams.Reconnects, Defer: rec.Defer, Limits: cfg.limits(), Logger: log,
		Identity: pg, SetIdentityFull: cfg.ReplicaIdentity == "full", Registry: gate.Registry()})
	if err := srv.Registry().Register(rec); err != nil {
		return fmt.Errorf("registering the reconciler's metrics: %w", err)
	}
	// Shapes created before -replica-identity full was given get their
	// tables set FULL now, as a new shape would.
	identityCtx, cancelIdentity := context.WithTimeout(ctx, 30*time.Second)
	srv.SetIdentitiesFull(identityCtx)
	cancelIdentity()
	gate.Serve(srv)
	go func() {
		select {
		case <-streaming:
			notifyOrWarn(notify, "READY=1\nSTATUS=streaming", log)
		case <-streamExited:
		}
	}()
	loop.watch(rec)
	log.Info().Str("listen", cfg.Listen).Str("slot", cfg.Slot).Str("system_id", sys.SystemID).
		Str("db", cfg.DB).Msg("ledgerd serving")

	var wg sync.WaitGroup
	reconcileCtx, stopReconcile := context.WithCancel(ctx)
	wg.Go(func() { _ = rec.Run(reconcileCtx) })

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
	drained = true
	notifyOrWarn(notify, "STOPPING=1\nSTATUS=draining", log)
	stopReconcile()
	wg.Wait()

	// Drain: end change streams, let in-flight calls finish, commit every
	// ack, confirm the last durable position, close the ledger.
	drainCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	hub.Close()
	if err := httpSrv.Shutdown(drainCtx); err != nil {
		_ = httpSrv.Close()
	}
	// Sync commits every ack together with the safe position they imply;
	// the stream's final status update then confirms it (I6).
	if err := led.Sync(drainCtx); err != nil {
		log.Warn().Err(err).Msg("committing the last acks before the final status update")
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
// reachable; a misconfiguration is returned at once. The slot is not created
// yet: the returned Setup does that once the ledger file is open.
//
// Transient failures (the server refuses connections, is starting up or
// shutting down, has no connection slot free) are retried with a capped
// backoff and reported through notReady; permanent ones (no such database
// or role, a wrong password, wal_level, privileges: stream.IsTerminal) end
// the start with the fix named.
func preflight(ctx context.Context, scfg stream.Config, log zerolog.Logger, notReady func(string)) (*stream.Setup, error) {
	probe, err := stream.New(scfg, checkOnly{})
	if err != nil {
		return nil, err
	}
	backoff := 250 * time.Millisecond
	for {
		setup, err := probe.Setup(ctx)
		if err == nil {
			return setup, nil
		}
		if stream.IsTerminal(err) || ctx.Err() != nil {
			return nil, err
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg("preflight failed, retrying")
		notReady(fmt.Sprintf("waiting for Postgres (retrying in %v): %v", backoff, err))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// slotAudit is the reconciler's view of the slot: the API's read of
// pg_replication_slots plus safe_wal_size, which that read does not carry.
type slotAudit struct {
	pg   *api.PG
	pool *pgxpool.Pool
	slot string
}

func newSlotAudit(ctx context.Context, pg *api.PG, connString, slot string) (*slotAudit, error) {
	pcfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("parsing the Postgres connection string: %w", err)
	}
	pcfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to Postgres for the slot audit: %w", err)
	}
	return &slotAudit{pg: pg, pool: pool, slot: slot}, nil
}

func (a *slotAudit) Close() { a.pool.Close() }

// AuditSlot implements reconcile.SlotAuditor.
func (a *slotAudit) AuditSlot(ctx context.Context) (reconcile.SlotState, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := a.pg.SlotStatus(ctx)
	if err != nil {
		return reconcile.SlotState{}, err
	}
	out := reconcile.SlotState{ConfirmedFlush: st.ConfirmedFlush, RestartLSN: st.RestartLSN, WALEnd: st.WALEnd,
		WALStatus: st.WALStatus, Active: st.Active, ActivePID: st.ActivePID, RetainedBytes: st.RetainedBytes}
	var safe *int64
	err = a.pool.QueryRow(ctx, "SELECT safe_wal_size FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", a.slot).Scan(&safe)
	if err != nil {
		return out, fmt.Errorf("reading safe_wal_size of slot %s: %w", a.slot, err)
	}
	if safe != nil {
		out.SafeWALSize, out.HasSafeWALSize = *safe, true
	}
	return out, nil
}

// notifyOrWarn sends state to the service manager, if one listens; a
// failure is logged, never fatal: the daemon works without it.
func notifyOrWarn(n *sdnotify.Notifier, state string, log zerolog.Logger) {
	if err := n.Notify(state); err != nil {
		log.Warn().Err(err).Msg("notifying the service manager")
	}
}

// loopHealth is what the watchdog asks: is the reconcile loop still
// passing? Until the reconciler runs the start-up is the loop, and it is
// alive (it retries Postgres or returns).
type loopHealth struct {
	rec   atomic.Pointer[reconcile.Reconciler]
	since atomic.Int64 // Unix nanoseconds when watch was called
}

func (h *loopHealth) watch(r *reconcile.Reconciler) {
	h.since.Store(time.Now().UnixNano())
	h.rec.Store(r)
}

// healthy reports whether a pass ended within stale (or, before the first
// pass, whether the reconciler started within stale).
func (h *loopHealth) healthy(stale time.Duration) bool {
	r := h.rec.Load()
	if r == nil {
		return true
	}
	last := time.Unix(0, h.since.Load())
	if lp := r.LastPass(); lp.After(last) {
		last = lp
	}
	return time.Since(last) < stale
}
