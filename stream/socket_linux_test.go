//go:build linux

package stream_test

import (
	"context"
	"testing"

	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/stream"
)

// TestReplicationSocketLeavesThePoller: the replication
// connection, over TCP or the Unix socket, is read outside the runtime's
// poller, so that the walsender's packets do not wake an idle thread while
// the stream is not reading.
func TestReplicationSocketLeavesThePoller(t *testing.T) {
	db := pgtest.NewDB(t, cluster)
	name := pgtest.DBName(t.Name())
	for _, conn := range []string{db, cluster.SocketConnString(name)} {
		s, err := stream.New(stream.Config{ConnString: conn, Slot: "s", Publication: "p"}, &recorder{})
		if err != nil {
			t.Fatal(err)
		}
		kind, err := stream.ReplicationSocket(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if kind != "*stream.blockConn" {
			t.Errorf("%s: the replication connection reads through %s, want *stream.blockConn", conn, kind)
		}
	}
}
