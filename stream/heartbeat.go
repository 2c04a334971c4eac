package stream

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// heartbeatSQL emits a transactional logical message in the slot's
// database. Decoded with messages 'true', it arrives as a transaction of its
// own: on a busy cluster where this database is idle, it is what lets the
// slot's confirmed position move (I3) instead of waiting on other databases'
// WAL.
const heartbeatSQL = "SELECT pg_logical_emit_message(true, '" + HeartbeatPrefix + "', 'heartbeat ' || now()::text)"

// heartbeat emits heartbeatSQL every HeartbeatInterval on an ordinary
// connection until ctx is done. Failures are logged once and retried on the
// next tick with a new connection; they never stop the stream.
func (s *Stream) heartbeat(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
			defer cancel()
			conn.Close(cctx)
		}
	}()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := func() error {
			var err error
			if conn == nil || conn.IsClosed() {
				if conn, err = pgconn.Connect(ctx, s.cfg.ConnString); err != nil {
					conn = nil
					return err
				}
			}
			_, err = conn.Exec(ctx, heartbeatSQL).ReadAll()
			return err
		}()
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				s.log.Warn().Err(err).Msg("heartbeat failed, retrying every interval")
			}
			failing = true
			if conn != nil {
				conn.Close(ctx)
				conn = nil
			}
		case failing:
			failing = false
			s.log.Info().Msg("heartbeat recovered")
		}
	}
}
