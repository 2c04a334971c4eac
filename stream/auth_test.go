package stream_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledgerd/ledgerd/stream"
)

// TestCheckWrongPassword: a wrong password (SQLSTATE 28P01) is terminal,
// with a fix naming the password; retrying it can only lock the role out or
// fill the server's log. The role's password authentication is switched on
// for this role alone, in front of the cluster's trust rules.
func TestCheckWrongPassword(t *testing.T) {
	e := newEnv(t)
	role := e.name + "_pw"
	e.exec(`CREATE ROLE ` + role + ` LOGIN REPLICATION PASSWORD 'right'`)
	t.Cleanup(func() { _ = cluster.Exec(context.Background(), "postgres", "DROP ROLE IF EXISTS "+role) })

	hba := filepath.Join(cluster.DataDir(), "pg_hba.conf")
	orig, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	rules := "host all " + role + " 127.0.0.1/32 scram-sha-256\nhost replication " + role + " 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(hba, append([]byte(rules), orig...), 0o600); err != nil {
		t.Fatal(err)
	}
	reload := func() {
		if err := cluster.Exec(context.Background(), "postgres", "SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if err := os.WriteFile(hba, orig, 0o600); err != nil {
			t.Error(err)
		}
		reload()
	})
	reload()
	wrong := strings.Replace(e.db, "postgres@", role+":Qz7notit@", 1)
	waitFor(t, "the password rule to apply", func() bool {
		c, err := pgx.Connect(context.Background(), wrong)
		if err == nil {
			c.Close(context.Background())
			return false
		}
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.Code == "28P01"
	})

	e.cfg.ConnString = wrong
	_, err = check(t, e.cfg)
	wantCheckError(t, err, stream.ErrPassword, "password", true)
	if strings.Contains(err.Error(), "Qz7notit") {
		t.Errorf("the error shows the password: %v", err)
	}
}

// TestCheckMissingDatabaseOrRole: a connection string naming a database or
// a role that does not exist is terminal, with a fix naming what to create;
// no reconnect can succeed until someone does.
func TestCheckMissingDatabaseOrRole(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg
	cfg.ConnString = strings.Replace(e.db, "/"+e.name+"?", "/no_such_db?", 1)
	_, err := check(t, cfg)
	wantCheckError(t, err, stream.ErrDatabaseMissing, `CREATE DATABASE "no_such_db"`, true)

	cfg.ConnString = strings.Replace(e.db, "postgres@", "no_such_role@", 1)
	_, err = check(t, cfg)
	wantCheckError(t, err, stream.ErrRoleMissing, `CREATE ROLE "no_such_role"`, true)
}
