package stream_test

import (
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

func change(c stream.Change) string {
	return fmt.Sprintf("%s %s new[%s] old[%s]", c.Op, c.Table, row(c.New), row(c.Old))
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
		{"update public.items new[id=2 name=a qty=11 note=it's big=<unchanged>] old[id=1 name=NULL qty=NULL note=NULL big=NULL]"},
		{"insert public.full_items new[id=1 name=f] old[-]"},
		{"update public.full_items new[id=1 name=g] old[id=1 name=f]"},
		{"delete public.items new[-] old[id=2 name=NULL qty=NULL note=NULL big=NULL]"},
		{"delete public.full_items new[-] old[id=1 name=g]"},
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

// TestLargeTransaction streams one transaction of 100k rows.
func TestLargeTransaction(t *testing.T) {
	e := newEnv(t)
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
