package stream_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/stream"
)

// row renders a decoded row compactly: name=value, NULL, <unchanged>; long
// values as their first bytes and length.
func row(cols []stream.Column) string {
	if cols == nil {
		return "-"
	}
	var parts []string
	for _, c := range cols {
		switch c.Kind {
		case stream.KindNull:
			parts = append(parts, c.Name+"=NULL")
		case stream.KindUnchanged:
			parts = append(parts, c.Name+"=<unchanged>")
		default:
			v := c.Value
			if len(v) > 16 {
				v = fmt.Sprintf("%s...(%d)", v[:4], len(v))
			}
			parts = append(parts, c.Name+"="+v)
		}
	}
	return strings.Join(parts, " ")
}

// change renders a change; a key-only or full old tuple is marked old(key)
// or old(full).
func change(c stream.Change) string {
	kind := ""
	if c.OldKind != stream.TupleNone {
		kind = "(" + c.OldKind.String() + ")"
	}
	return fmt.Sprintf("%s %s new[%s] old%s[%s]", c.Op, c.Table, row(c.New), kind, row(c.Old))
}

// TestDecodeEveryOp checks each operation's decoded values: insert, update
// with replica identity default (plain, key change, unchanged TOAST) and
// full, delete under both identities, TRUNCATE of two tables, and
// transactional logical messages.
func TestDecodeEveryOp(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, name text, qty int, note text, big text)`)
	e.exec(`ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL`) // always TOASTed out of line
	e.exec(`CREATE TABLE full_items (id int PRIMARY KEY, name text)`)
	e.exec(`ALTER TABLE full_items REPLICA IDENTITY FULL`)
	e.exec(`CREATE TABLE other (id int)`)
	h := newRecorder(true)
	e.start(h)

	before := time.Now().Add(-time.Minute)
	e.exec(`INSERT INTO items VALUES (1, 'a', 10, NULL, repeat('x', 10000))`)
	e.exec(`UPDATE items SET qty = 11 WHERE id = 1`)
	e.exec(`UPDATE items SET id = 2, note = 'it''s' WHERE id = 1`)
	e.exec(`INSERT INTO full_items VALUES (1, 'f')`)
	e.exec(`UPDATE full_items SET name = 'g'`)
	e.exec(`DELETE FROM items WHERE id = 2`)
	e.exec(`DELETE FROM full_items`)
	e.exec(`SELECT pg_logical_emit_message(false, 'test', 'not transactional')`)
	e.exec(`BEGIN; INSERT INTO other VALUES (7); SELECT pg_logical_emit_message(true, 'test', 'hello'); TRUNCATE items, other; COMMIT`)

	want := [][]string{
		{"insert public.items new[id=1 name=a qty=10 note=NULL big=xxxx...(10000)] old[-]"},
		{"update public.items new[id=1 name=a qty=11 note=NULL big=<unchanged>] old[-]"},
		{"update public.items new[id=2 name=a qty=11 note=it's big=<unchanged>] old(key)[id=1]"},
		{"insert public.full_items new[id=1 name=f] old[-]"},
		{"update public.full_items new[id=1 name=g] old(full)[id=1 name=f]"},
		{"delete public.items new[-] old(key)[id=2]"},
		{"delete public.full_items new[-] old(full)[id=1 name=g]"},
		{"insert public.other new[id=7] old[-]", "truncate public.items new[-] old[-]", "truncate public.other new[-] old[-]"},
	}
	waitFor(t, "all transactions", func() bool { return len(h.dataTxns()) >= len(want) })
	txns := h.dataTxns()
	if len(txns) != len(want) {
		t.Fatalf("got %d transactions, want %d", len(txns), len(want))
	}
	for i, txn := range txns {
		var got []string
		for _, c := range txn.Changes {
			got = append(got, change(c))
		}
		if strings.Join(got, "\n") != strings.Join(want[i], "\n") {
			t.Errorf("txn %d:\n got %s\nwant %s", i, strings.Join(got, "\n     "), strings.Join(want[i], "\n     "))
		}
		if txn.Xid == 0 || txn.CommitLSN == 0 || txn.EndLSN <= txn.CommitLSN {
			t.Errorf("txn %d: xid %d commit %s end %s", i, txn.Xid, txn.CommitLSN, txn.EndLSN)
		}
		if i > 0 && txn.CommitLSN <= txns[i-1].CommitLSN {
			t.Errorf("txn %d: commit %s not after %s", i, txn.CommitLSN, txns[i-1].CommitLSN)
		}
		if txn.CommitTime.Before(before) || txn.CommitTime.After(time.Now().Add(time.Minute)) {
			t.Errorf("txn %d: commit time %v", i, txn.CommitTime)
		}
	}
	if v := txns[0].Changes[0].New[4].Value; v != strings.Repeat("x", 10000) {
		t.Errorf("TOASTed value decoded as %d bytes", len(v))
	}
	last := txns[len(txns)-1]
	if len(last.Messages) != 1 || last.Messages[0].Prefix != "test" || string(last.Messages[0].Content) != "hello" ||
		last.Messages[0].LSN == 0 {
		t.Errorf("messages %+v, want one transactional 'test' 'hello'", last.Messages)
	}
	for _, txn := range h.snapshot() {
		for _, m := range txn.Messages {
			if string(m.Content) == "not transactional" {
				t.Errorf("non-transactional message delivered in txn %s", txn.CommitLSN)
			}
		}
	}
	if h.duplicates() != 0 {
		t.Errorf("%d transactions handed twice", h.duplicates())
	}
}

// TestDecodeReplicaIdentity: under each replica identity, the old tuple of
// an update or delete holds what Postgres sent and nothing more. A key-only
// tuple (DEFAULT, USING INDEX) holds just the key columns: the others are
// absent, never decoded as NULL (a NULL tenant would match no filter and a
// filtered shape would miss the delete, I1). FULL holds the whole row. Under
// NOTHING Postgres refuses updates and deletes of a published table, so
// only inserts and TRUNCATE reach the stream.
func TestDecodeReplicaIdentity(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE dflt (id int PRIMARY KEY, tenant text, note text)`)
	e.exec(`CREATE TABLE fullr (id int PRIMARY KEY, tenant text, note text)`)
	e.exec(`ALTER TABLE fullr REPLICA IDENTITY FULL`)
	e.exec(`CREATE TABLE idx (id int PRIMARY KEY, code text NOT NULL, tenant text)`)
	e.exec(`CREATE UNIQUE INDEX idx_code ON idx (code)`)
	e.exec(`ALTER TABLE idx REPLICA IDENTITY USING INDEX idx_code`)
	e.exec(`CREATE TABLE nothing (id int PRIMARY KEY, tenant text)`)
	e.exec(`ALTER TABLE nothing REPLICA IDENTITY NOTHING`)
	e.exec(`CREATE TABLE nokey (tenant text, note text)`) // DEFAULT without a primary key: like NOTHING
	h := newRecorder(true)
	e.start(h)

	for _, sql := range []string{
		`INSERT INTO dflt VALUES (1, 'b', NULL)`,
		`UPDATE dflt SET note = 'n'`,
		`UPDATE dflt SET id = 2`,
		`DELETE FROM dflt`,
		`INSERT INTO fullr VALUES (1, 'b', NULL)`,
		`UPDATE fullr SET id = 2`,
		`DELETE FROM fullr`,
		`INSERT INTO idx VALUES (1, 'k1', 'b')`,
		`UPDATE idx SET id = 2`,
		`UPDATE idx SET code = 'k2'`,
		`DELETE FROM idx`,
		`INSERT INTO nothing VALUES (1, 'b')`,
		`TRUNCATE nothing`,
	} {
		e.exec(sql)
	}
	for _, sql := range []string{`UPDATE nothing SET tenant = 'c'`, `DELETE FROM nothing`, `DELETE FROM nokey`} {
		if _, err := e.sql.Exec(context.Background(), sql); err == nil || !strings.Contains(err.Error(), "replica identity") {
			t.Errorf("%s: %v, want Postgres to refuse it for lack of a replica identity", sql, err)
		}
	}
	want := []string{
		"insert public.dflt new[id=1 tenant=b note=NULL] old[-]",
		"update public.dflt new[id=1 tenant=b note=n] old[-]",
		"update public.dflt new[id=2 tenant=b note=n] old(key)[id=1]",
		"delete public.dflt new[-] old(key)[id=2]",
		"insert public.fullr new[id=1 tenant=b note=NULL] old[-]",
		"update public.fullr new[id=2 tenant=b note=NULL] old(full)[id=1 tenant=b note=NULL]",
		"delete public.fullr new[-] old(full)[id=2 tenant=b note=NULL]",
		"insert public.idx new[id=1 code=k1 tenant=b] old[-]",
		"update public.idx new[id=2 code=k1 tenant=b] old[-]",
		"update public.idx new[id=2 code=k2 tenant=b] old(key)[code=k1]",
		"delete public.idx new[-] old(key)[code=k2]",
		"insert public.nothing new[id=1 tenant=b] old[-]",
		"truncate public.nothing new[-] old[-]",
	}
	waitFor(t, "all transactions", func() bool { return len(h.dataTxns()) >= len(want) })
	var got []string
	for _, txn := range h.dataTxns() {
		for _, c := range txn.Changes {
			got = append(got, change(c))
			if (c.Old == nil) != (c.OldKind == stream.TupleNone) {
				t.Errorf("%s: old tuple kind %s with old row %v", change(c), c.OldKind, c.Old)
			}
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestLargeTransaction streams one transaction of 100k rows, handed over
// whole (ChunkBytes negative).
func TestLargeTransaction(t *testing.T) {
	e := newEnv(t)
	e.cfg.ChunkBytes = -1
	e.exec(`CREATE TABLE big (id int PRIMARY KEY, v text)`)
	h := newRecorder(true)
	e.start(h)
	const n = 100_000
	e.exec(`INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, $1) g`, n)
	waitFor(t, "the large transaction", func() bool { return len(h.dataTxns()) == 1 })
	txn := h.dataTxns()[0]
	if len(txn.Changes) != n {
		t.Fatalf("%d changes, want %d", len(txn.Changes), n)
	}
	for i, c := range txn.Changes {
		id := fmt.Sprint(i + 1)
		if c.Op != stream.OpInsert || c.Table != "public.big" || c.New[0].Value != id || c.New[1].Value != "v"+id {
			t.Fatalf("change %d: %s", i, change(c))
		}
	}
}

// TestUnpublishedTables: changes to tables outside the publication are not
// delivered, and with nothing pending the slot still advances to the WAL end.
func TestUnpublishedTables(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE pubd (id int PRIMARY KEY)`)
	e.exec(`CREATE TABLE private (id int PRIMARY KEY)`)
	e.cfg.CreatePublication = "public.pubd"
	h := newRecorder(true)
	e.start(h)
	e.exec(`INSERT INTO pubd VALUES (1)`)
	for i := range 50 {
		e.exec(`INSERT INTO private VALUES ($1)`, i)
	}
	e.exec(`BEGIN; INSERT INTO private VALUES (100); INSERT INTO pubd VALUES (2); COMMIT`)
	for i := range 50 {
		e.exec(`UPDATE private SET id = id + 1000 WHERE id = $1`, i)
	}
	end := e.walLSN()
	waitFor(t, "the slot to reach the WAL end", func() bool { return e.confirmed() >= end })
	txns := h.dataTxns()
	if len(txns) != 2 {
		t.Fatalf("%d transactions delivered, want the 2 touching pubd", len(txns))
	}
	for _, txn := range txns {
		for _, c := range txn.Changes {
			if c.Table != "public.pubd" {
				t.Errorf("change of unpublished table delivered: %s", change(c))
			}
		}
	}
}
