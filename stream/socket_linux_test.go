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
// the stream is not reading; over the Unix socket the read coalescing
// knows it (a backlog is read at once).
func TestReplicationSocketLeavesThePoller(t *testing.T) {
	db := pgtest.NewDB(t, cluster)
	name := pgtest.DBName(t.Name())
	for conn, want := range map[string]string{db: "*stream.blockConn", cluster.SocketConnString(name): "*stream.blockConn unix"} {
		s, err := stream.New(stream.Config{ConnString: conn, Slot: "s", Publication: "p"}, &recorder{})
		if err != nil {
			t.Fatal(err)
		}
		kind, err := stream.ReplicationSocket(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if kind != want {
			t.Errorf("%s: the replication connection reads through %q, want %q", conn, kind, want)
		}
	}
}
