package stream

import (
	"context"
	"fmt"
)

// ReplicationSocket connects s as a session does and reports the type of
// the connection under the read coalescing, which tells whether the
// socket is left in the runtime's poller.
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
	return fmt.Sprintf("%T", cc.Conn), nil
}
