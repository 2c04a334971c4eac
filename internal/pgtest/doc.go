// Package pgtest starts throw-away PostgreSQL clusters for tests.
//
// A Cluster is a real postgres server built from the installed server
// binaries (found through pg_config --bindir, then the highest
// /usr/lib/postgresql/*/bin, then PATH), initialised in a temporary directory
// with wal_level=logical and fsync on, listening on a free port of 127.0.0.1
// with trust authentication. It can be stopped, crashed (pg_ctl stop -m
// immediate) and started again on the same data directory, which is what the
// crash tests of the replication stream need.
//
// initdb refuses to run as root, so when the tests run as root (as CI does)
// every server program runs as the "postgres" OS user, which owns the
// temporary directory.
//
// A package normally starts one cluster in TestMain and gives each test its
// own database with NewDB:
//
//	var cluster *pgtest.Cluster
//
//	func TestMain(m *testing.M) {
//		c, err := pgtest.Start(pgtest.Options{})
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		cluster = c
//		code := m.Run()
//		c.Close()
//		os.Exit(code)
//	}
//
// A test binary killed before its cleanup ran leaves its cluster behind; the
// next Start stops and removes clusters whose owning process is gone.
package pgtest
