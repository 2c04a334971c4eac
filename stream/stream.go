package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/ledgerd/ledgerd/ledger"
)

// closeTimeout bounds the goodbye to the server when a session ends.
const closeTimeout = 5 * time.Second

// Stream reads one logical slot and hands its transactions to a Handler.
type Stream struct {
	cfg Config
	h   Handler
	log zerolog.Logger

	// Owned by the Run goroutine (lent to the status timer while HandleTxn
	// blocks, see handle).
	lastHanded ledger.LSN      // commit LSN of the last transaction HandleTxn accepted
	sent       ledger.LSN      // highest position confirmed to Postgres
	started    bool            // a session passed its preflight: never create the slot again
	coalescing *coalescingConn // the session's connection, told when the stream is behind

	// Nudge: an ack moved the handler's flush position; the session sends a
	// status update soon instead of at the next interval.
	nudged   atomic.Bool
	nudgeC   chan struct{}                 // wakes the lender while the handler blocks
	readConn atomic.Pointer[readDeadliner] // the session's connection, to cut a blocked read short

	stats struct { // read by Stats from any goroutine
		streaming  atomic.Bool
		confirmed  atomic.Uint64
		walEnd     atomic.Uint64
		lastCommit atomic.Uint64
		sessions   atomic.Uint64
	}
}

// Stats is a snapshot of the stream's progress, for status pages, metrics
// and readiness.
type Stats struct {
	Streaming  bool       // a session is streaming now
	Confirmed  ledger.LSN // highest position confirmed to Postgres
	WALEnd     ledger.LSN // server WAL end from the last keepalive or data message
	LastCommit ledger.LSN // commit LSN of the last transaction handed over
	Sessions   uint64     // sessions that reached streaming (1 + reconnects)
}

// Stats returns the current progress. It is safe for concurrent use.
func (s *Stream) Stats() Stats {
	return Stats{
		Streaming:  s.stats.streaming.Load(),
		Confirmed:  ledger.LSN(s.stats.confirmed.Load()),
		WALEnd:     ledger.LSN(s.stats.walEnd.Load()),
		LastCommit: ledger.LSN(s.stats.lastCommit.Load()),
		Sessions:   s.stats.sessions.Load(),
	}
}

// New returns a Stream for cfg feeding h. It does not connect.
func New(cfg Config, h Handler) (*Stream, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: a Handler is required", ErrConfig)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Stream{cfg: cfg, h: h, log: cfg.Logger.With().Str("component", "stream").Str("slot", cfg.Slot).Logger(),
		nudgeC: make(chan struct{}, 1)}, nil
}

// MinStatusGap is the least time between two status updates sent because of
// a Nudge: a burst of acks costs Postgres one update per gap.
const MinStatusGap = 10 * time.Millisecond

type readDeadliner interface{ SetReadDeadline(time.Time) error }

// Nudge asks for a status update soon (within MinStatusGap of the previous
// one), rather than at the next StatusInterval: the Handler's FlushLSN
// moved, typically after an ack, and an idle database would otherwise wait
// the whole interval (or a server keepalive) to see the slot advance. It is
// safe for concurrent use and never blocks. When FlushLSN is not past what
// was confirmed already (the ack moved a shape, not the slot's position),
// it does nothing: the session is not woken for nothing.
func (s *Stream) Nudge() {
	if s.h.FlushLSN() <= ledger.LSN(s.stats.confirmed.Load()) {
		return
	}
	s.nudged.Store(true)
	select {
	case s.nudgeC <- struct{}{}:
	default:
	}
	if c := s.readConn.Load(); c != nil {
		_ = (*c).SetReadDeadline(time.Now()) // the session loop sends the update
	}
}

// Run streams until ctx is done, reconnecting after any failure with capped
// exponential backoff (ReconnectMin doubling up to ReconnectMax, back to
// ReconnectMin once a session streams). Each session starts at the slot's
// confirmed_flush_lsn, so a transaction committed while disconnected is
// never lost (I1).
//
// Within one Stream, a transaction is handed to HandleTxn at most once:
// after a reconnect Postgres resends everything after confirmed_flush_lsn,
// and transactions whose commit LSN is at or below the last one handed are
// dropped. Across processes, the ledger does the same from its durable state
// (I2).
//
// It runs the heartbeat (see Config.HeartbeatInterval) alongside. It returns
// nil when ctx is done, after a final status update, or the first terminal
// error (IsTerminal): a misconfiguration that retrying cannot cure.
func (s *Stream) Run(ctx context.Context) error {
	hbCtx, stopHB := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if s.cfg.HeartbeatInterval > 0 {
		wg.Go(func() { s.heartbeat(hbCtx) })
	}
	defer func() {
		stopHB()
		wg.Wait()
	}()

	backoff := s.cfg.ReconnectMin
	for {
		streamed, err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if IsTerminal(err) {
			s.log.Error().Err(err).Msg("stream stopped")
			return err
		}
		if streamed {
			backoff = s.cfg.ReconnectMin
		}
		s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("replication session ended, reconnecting")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, s.cfg.ReconnectMax)
	}
}

// session runs one replication connection from preflight to failure.
// streamed reports whether it got as far as streaming.
func (s *Stream) session(ctx context.Context) (streamed bool, err error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		s.stats.streaming.Store(false)
		if b, ok := s.h.(Batcher); ok {
			b.EndBatch() // what was handed over must not wait for the next session
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		if streamed && ctx.Err() != nil {
			// Shutting down: confirm what the handler has made safe.
			if serr := s.sendStatus(conn); serr != nil {
				s.log.Warn().Err(serr).Msg("final status update failed")
			}
		}
		conn.Close(cctx)
	}()

	_, slot, err := s.preflight(ctx, conn, !s.started, false)
	if err != nil {
		return false, err
	}
	s.started = true
	start := slot.confirmedFlush
	if start > s.sent {
		// Never confirm below the slot's position: older Postgres versions
		// would move confirmed_flush_lsn back.
		s.sent = start
	}
	err = pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '1'",
			"publication_names " + quoteLiteral(quoteIdent(s.cfg.Publication)),
			"messages 'true'",
		},
	})
	if err != nil {
		return false, fmt.Errorf("starting replication at %s: %w", start, err)
	}
	streamed = true
	s.stats.streaming.Store(true)
	s.stats.sessions.Add(1)
	if s.cfg.OnStreaming != nil {
		s.cfg.OnStreaming()
	}
	s.log.Info().Stringer("start_lsn", start).Stringer("last_handed", s.lastHanded).Msg("streaming")

	dec := NewDecoder()
	dec.SkipThrough = s.lastHanded
	dec.ChunkBytes = s.cfg.ChunkBytes
	lend := s.startLender(conn)
	defer lend.stop()

	// The read deadline, not a per-message context, bounds each receive: it
	// is set only when the next status update time moves. Cancelling ctx
	// moves it to the past to interrupt a blocked read.
	netConn := conn.Conn()
	// The coalescing connection under pgconn (not reachable under TLS,
	// which then reads without the backlog hint).
	s.coalescing, _ = netConn.(*coalescingConn)
	stopWatch := context.AfterFunc(ctx, func() { _ = netConn.SetReadDeadline(time.Unix(1, 0)) })
	defer stopWatch()
	var rd readDeadliner = netConn
	s.readConn.Store(&rd)
	defer s.readConn.Store(nil)
	var deadline, lastStatus time.Time
	cut := false // the last read timed out, maybe before the deadline (a nudge)
	for {
		if ctx.Err() != nil {
			return streamed, ctx.Err()
		}
		now := s.readTime()
		nudge := false
		if s.nudged.Load() {
			if nudge = s.h.FlushLSN() > s.sent; !nudge {
				s.nudged.Store(false) // nothing new to confirm
			}
		}
		if nudge && now.Sub(lastStatus) < MinStatusGap {
			// Rate-limited: the update goes out at the end of the gap.
			if err := netConn.SetReadDeadline(lastStatus.Add(MinStatusGap)); err != nil {
				return streamed, fmt.Errorf("setting read deadline: %w", err)
			}
		} else if nudge || deadline.IsZero() || !now.Before(deadline) {
			s.nudged.Store(false)
			if err := s.sendStatus(conn); err != nil {
				return streamed, err
			}
			lastStatus = now
			deadline = now.Add(s.cfg.StatusInterval)
			if err := netConn.SetReadDeadline(deadline); err != nil {
				return streamed, fmt.Errorf("setting read deadline: %w", err)
			}
		} else if cut {
			// A nudge that found nothing to confirm cut the read short:
			// wait again until the status interval is up.
			if err := netConn.SetReadDeadline(deadline); err != nil {
				return streamed, fmt.Errorf("setting read deadline: %w", err)
			}
		}
		cut = false
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return streamed, ctx.Err()
			}
			if pgconn.Timeout(err) {
				cut = true
				continue // time for a status update, or a nudge
			}
			return streamed, fmt.Errorf("receiving: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			reply, err := s.receive(ctx, conn, dec, lend, msg.Data)
			if err != nil {
				return streamed, err
			}
			if reply {
				deadline = time.Time{} // send now and restart the interval
			}
		case *pgproto3.ErrorResponse:
			return streamed, fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return streamed, errors.New("server ended the replication stream")
		default:
			s.log.Debug().Str("type", fmt.Sprintf("%T", msg)).Msg("ignoring unexpected message")
		}
	}
}

// readTime is the time the session loop goes by: when the connection was
// last read, which brings in a few hundred messages at a time while
// behind, without a clock read for each of them. Without a coalescing
// connection (TLS), or before its first read, it is the time now.
func (s *Stream) readTime() time.Time {
	if c := s.coalescing; c != nil && !c.last.IsZero() {
		return c.last
	}
	return time.Now()
}

// receive processes one CopyData payload and reports whether a status
// update should be sent now.
func (s *Stream) receive(ctx context.Context, conn *pgconn.PgConn, dec *Decoder, lend *lender, data []byte) (reply bool, err error) {
	if len(data) == 0 {
		return false, errors.New("empty CopyData from server")
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return false, fmt.Errorf("keepalive: %w", err)
		}
		s.stats.walEnd.Store(uint64(ka.ServerWALEnd))
		if !dec.InTxn() {
			// Everything before the WAL end was received and handed over
			// synchronously: with nothing pending the handler may let the
			// flush move there (I3).
			s.h.Idle(ledger.LSN(ka.ServerWALEnd))
		}
		return ka.ReplyRequested || s.h.FlushLSN() > s.sent, nil
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return false, fmt.Errorf("xlog data: %w", err)
		}
		s.stats.walEnd.Store(uint64(xld.ServerWALEnd))
		txn, err := dec.Decode(xld.WALData)
		if err != nil {
			return false, fmt.Errorf("at %s: %w", xld.WALStart, err)
		}
		if c := s.coalescing; c != nil {
			open := dec.txn
			if open == nil {
				open = txn
			}
			if open != nil {
				c.backlog.Store(xld.ServerTime.Sub(open.CommitTime) > backlogLag)
			}
		}
		if txn == nil {
			return false, nil
		}
		if err := lend.handle(ctx, txn); err != nil {
			return false, fmt.Errorf("handling transaction %s: %w", txn.CommitLSN, err)
		}
		if txn.More {
			// A piece: the transaction counts as handed over only with its
			// last one. A session cut before it hands it again from its
			// first piece.
			return false, nil
		}
		s.lastHanded = txn.CommitLSN
		s.stats.lastCommit.Store(uint64(txn.CommitLSN))
		dec.SkipThrough = txn.CommitLSN
		return false, nil
	default:
		return false, fmt.Errorf("unknown replication message %q", data[0])
	}
}

// lender keeps status updates flowing while HandleTxn blocks
// (backpressure), so that wal_sender_timeout does not end the session: the
// session goroutine lends the connection to a ticker for the duration of
// each HandleTxn and takes it back before touching it again, so only one
// goroutine uses the connection at a time. mu is held across the status
// write only on the ticker side, and only while the connection is lent.
type lender struct {
	s    *Stream
	conn *pgconn.PgConn
	mu   sync.Mutex
	lent bool
	done chan struct{}
	wg   sync.WaitGroup
}

func (s *Stream) startLender(conn *pgconn.PgConn) *lender {
	l := &lender{s: s, conn: conn, done: make(chan struct{})}
	l.wg.Go(func() {
		t := time.NewTicker(s.cfg.StatusInterval)
		defer t.Stop()
		for {
			select {
			case <-l.done:
				return
			case <-t.C:
			case <-s.nudgeC:
				// An ack while the handler blocks: confirm it now.
			}
			l.mu.Lock()
			if l.lent {
				if err := s.sendStatus(conn); err != nil {
					s.log.Warn().Err(err).Msg("status update while the handler blocks")
				}
			}
			l.mu.Unlock()
		}
	})
	return l
}

// handle hands txn to the Handler with the connection lent to the ticker.
func (l *lender) handle(ctx context.Context, txn *Txn) error {
	l.mu.Lock()
	l.lent = true
	l.mu.Unlock()
	err := l.s.h.HandleTxn(ctx, txn)
	l.mu.Lock()
	l.lent = false
	l.mu.Unlock()
	return err
}

func (l *lender) stop() {
	close(l.done)
	l.wg.Wait()
}

// sendStatus confirms Handler.FlushLSN() as write, flush and apply
// position, never less than what was confirmed before (I6).
func (s *Stream) sendStatus(conn *pgconn.PgConn) error {
	pos := s.h.FlushLSN()
	if pos < s.sent {
		pos = s.sent
	}
	if pos == 0 {
		return nil // nothing known yet; 0 means "invalid" to Postgres
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(pos),
		WALFlushPosition: pglogrepl.LSN(pos),
		WALApplyPosition: pglogrepl.LSN(pos),
	})
	if err != nil {
		return fmt.Errorf("sending status update: %w", err)
	}
	s.sent = pos
	s.stats.confirmed.Store(uint64(pos))
	return nil
}
