package pgtest_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/internal/pgtest"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgtest.Run(m, pgtest.Options{}, &cluster))
}

func query(t *testing.T, connString, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestDefaults(t *testing.T) {
	db := pgtest.NewDB(t, cluster)
	for setting, want := range map[string]string{"wal_level": "logical", "fsync": "on"} {
		if got := query(t, db, "SHOW "+setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if got := query(t, db, "SELECT current_database()"); got != pgtest.DBName(t.Name()) {
		t.Errorf("connected to %q, want the test's database", got)
	}
	if _, err := os.Stat(cluster.BinDir() + "/pg_recvlogical"); err != nil {
		t.Errorf("BinDir has no pg_recvlogical: %v", err)
	}
}

func TestCrashKeepsCommittedData(t *testing.T) {
	c, err := pgtest.Start(pgtest.Options{Settings: map[string]string{"wal_level": "replica"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	db := c.ConnString("postgres")
	if got := query(t, db, "SHOW wal_level"); got != "replica" {
		t.Errorf("wal_level = %q, want the override replica", got)
	}
	if err := c.Exec(context.Background(), "postgres", "CREATE TABLE t AS SELECT 42 AS v"); err != nil {
		t.Fatal(err)
	}
	if err := c.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := query(t, db, "SELECT v::text FROM t"); got != "42" {
		t.Errorf("after crash: %q, want 42", got)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	dir := c.DataDir()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data dir still there after Close: %v", err)
	}
}

func TestDBName(t *testing.T) {
	long := pgtest.DBName("TestX/" + string(make([]byte, 100)))
	if len(long) > 63 {
		t.Errorf("name of %d bytes", len(long))
	}
	if got := pgtest.DBName("TestA/sub-case"); got != "t_testa_sub_case" {
		t.Errorf("DBName = %q", got)
	}
}

// TestLeftoversRemoved: a cluster directory whose owning process is gone (a
// killed test run) is removed by the next Start.
func TestLeftoversRemoved(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "ledgerd-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("leftover %s still there: %v", dir, err)
	}
	if _, err := os.Stat(filepath.Dir(c.DataDir())); err != nil {
		t.Errorf("own cluster directory: %v", err)
	}
}
