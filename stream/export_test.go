package stream

import (
	"context"
	"fmt"
)

// ReplicationSocket connects s as a session does and reports the type of
// the connection under the read coalescing, which tells whether the
// socket is left in the runtime's poller, and whether the coalescing takes
// it for a Unix socket (" unix").
func ReplicationSocket(ctx context.Context, s *Stream) (string, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	cc, ok := conn.Conn().(*coalescingConn)
	if !ok {
		return fmt.Sprintf("%T", conn.Conn()), nil
	}
	kind := fmt.Sprintf("%T", cc.Conn)
	if cc.unix {
		kind += " unix"
	}
	return kind, nil
}
