package stream_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ledgerd/ledgerd/stream"
)

// TestRelationMessages: a transaction carries the relation messages
// Postgres sent in it and each change its relation's OID. The OID stays
// across a rename (the next change comes with a relation message under the
// new name) and a dropped column (without it); a table dropped and created
// again under the same name has another OID.
func TestRelationMessages(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE t (id int PRIMARY KEY, a text, b text)`)
	oid := func() uint32 {
		var id uint32
		if err := e.sql.QueryRow(context.Background(), `SELECT 'public.t'::regclass::oid`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	first := oid()
	h := newRecorder(true)
	e.start(h)

	e.exec(`INSERT INTO t VALUES (1, 'x', 'y')`)
	e.exec(`INSERT INTO t VALUES (2, 'x', 'y')`)
	e.exec(`ALTER TABLE t RENAME TO t2`)
	e.exec(`ALTER TABLE t2 DROP COLUMN b`)
	e.exec(`INSERT INTO t2 VALUES (3, 'x')`)
	e.exec(`DROP TABLE t2`)
	e.exec(`CREATE TABLE t (id int PRIMARY KEY, a text)`)
	second := oid()
	e.exec(`INSERT INTO t VALUES (4, 'x')`)

	rel := func(r stream.Relation) string {
		return fmt.Sprintf("%d %s %s", r.ID, r.Table, strings.Join(r.Columns, ","))
	}
	want := []struct {
		relations string // the transaction's relation messages
		relID     uint32 // of its change
		table     string
	}{
		{fmt.Sprintf("%d public.t id,a,b", first), first, "public.t"},
		{"", first, "public.t"}, // the relation was sent before in this session
		{fmt.Sprintf("%d public.t2 id,a", first), first, "public.t2"},
		{fmt.Sprintf("%d public.t id,a", second), second, "public.t"},
	}
	waitFor(t, "all transactions", func() bool { return len(h.dataTxns()) >= len(want) })
	txns := h.dataTxns()
	if first == second {
		t.Fatalf("the table created again has the dropped one's OID %d", first)
	}
	for i, w := range want {
		var rels []string
		for _, r := range txns[i].Relations {
			rels = append(rels, rel(r))
		}
		ch := txns[i].Changes[0]
		if strings.Join(rels, "; ") != w.relations || ch.RelID != w.relID || ch.Table != w.table {
			t.Errorf("txn %d: relations [%s], change of %s (relation %d); want [%s], %s (%d)",
				i, strings.Join(rels, "; "), ch.Table, ch.RelID, w.relations, w.table, w.relID)
		}
	}
}
