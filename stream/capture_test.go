package stream_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ledgerd/ledgerd/stream"
)

var update = flag.Bool("update", false, "capture pgoutput messages from Postgres into testdata/stream")

// capturePath holds real pgoutput messages captured from Postgres, each
// framed by a 4-byte big-endian length. They seed FuzzDecode.
var capturePath = filepath.Join("..", "testdata", "stream", "pgoutput-v1.bin")

// captureSQL covers every pgoutput v1 message type: relation, type (an
// enum column), origin, insert, update (plain, key change, unchanged TOAST,
// replica identity full), delete, truncate and a logical message.
var captureSQL = []string{
	`CREATE TYPE mood AS ENUM ('ok', 'sad')`,
	`CREATE TABLE items (id int PRIMARY KEY, name text, m mood, note text, big text)`,
	`ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL`,
	`CREATE TABLE full_items (id int PRIMARY KEY, name text)`,
	`ALTER TABLE full_items REPLICA IDENTITY FULL`,
	`CREATE PUBLICATION pub FOR ALL TABLES`,
	`SELECT pg_create_logical_replication_slot('capture', 'pgoutput')`,
	`INSERT INTO items VALUES (1, 'a', 'ok', NULL, repeat('x', 3000))`,
	`UPDATE items SET name = 'b' WHERE id = 1`,
	`UPDATE items SET id = 2, m = 'sad' WHERE id = 1`,
	`INSERT INTO full_items VALUES (1, 'f'), (2, 'g')`,
	`UPDATE full_items SET name = 'h' WHERE id = 1`,
	`DELETE FROM full_items WHERE id = 2`,
	`DELETE FROM items`,
	`BEGIN; INSERT INTO items VALUES (3, 'c', NULL, 'n', 'small'); SELECT pg_logical_emit_message(true, 'test', 'hello'); TRUNCATE items, full_items; COMMIT`,
	`SELECT pg_replication_origin_create('upstream')`,
	`SELECT pg_replication_origin_session_setup('upstream')`,
	`BEGIN; SELECT pg_replication_origin_xact_setup('0/1234', now()); INSERT INTO items VALUES (4, 'o', 'ok', NULL, NULL); COMMIT`,
	`SELECT pg_replication_origin_session_reset()`,
	`SELECT pg_logical_emit_message(false, 'capture-end', '')`,
}

// TestCapture records captureSQL's pgoutput stream into capturePath when
// run with -update: go test ./stream -run TestCapture -update
func TestCapture(t *testing.T) {
	if !*update {
		return // the committed capture is checked by TestCapturedMessages
	}
	e := newEnv(t)
	for _, sql := range captureSQL {
		if _, err := e.sql.PgConn().Exec(context.Background(), sql).ReadAll(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgconn.Connect(ctx, e.db+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, "capture", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'pub'", "messages 'true'"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		out.Write(binary.BigEndian.AppendUint32(nil, uint32(len(xld.WALData))))
		out.Write(xld.WALData)
		if xld.WALData[0] == 'M' && bytes.Contains(xld.WALData, []byte("capture-end\x00")) {
			break
		}
	}
	if err := os.WriteFile(capturePath, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// frames splits a capture into its messages; ok is false on a bad frame.
func frames(b []byte) (msgs [][]byte, ok bool) {
	for len(b) > 0 {
		if len(b) < 4 {
			return msgs, false
		}
		n := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) {
			return msgs, false
		}
		msgs = append(msgs, b[:n])
		b = b[n:]
	}
	return msgs, true
}

func readCapture(t testing.TB) [][]byte {
	b, err := os.ReadFile(capturePath)
	if err != nil {
		t.Fatalf("%v (regenerate with: go test ./stream -run TestCapture -update)", err)
	}
	msgs, ok := frames(b)
	if !ok {
		t.Fatalf("%s: bad framing", capturePath)
	}
	return msgs
}

// TestCapturedMessages decodes the committed capture: every message type
// present, every transaction decoded as expected.
func TestCapturedMessages(t *testing.T) {
	msgs := readCapture(t)
	types := map[byte]bool{}
	d := stream.NewDecoder()
	var txns []*stream.Txn
	for i, m := range msgs {
		types[m[0]] = true
		txn, err := d.Decode(m)
		if err != nil {
			t.Fatalf("message %d (%q): %v", i, m[0], err)
		}
		if txn != nil {
			txns = append(txns, txn)
		}
	}
	for _, typ := range "BCRYOIUDTM" {
		if !types[byte(typ)] {
			t.Errorf("capture lacks message type %q", typ)
		}
	}
	var got []string
	for _, txn := range txns {
		for _, c := range txn.Changes {
			got = append(got, change(c))
		}
	}
	want := []string{
		"insert public.items new[id=1 name=a m=ok note=NULL big=xxxx...(3000)] old[-]",
		"update public.items new[id=1 name=b m=ok note=NULL big=<unchanged>] old[-]",
		"update public.items new[id=2 name=b m=sad note=NULL big=<unchanged>] old(key)[id=1]",
		"insert public.full_items new[id=1 name=f] old[-]",
		"insert public.full_items new[id=2 name=g] old[-]",
		"update public.full_items new[id=1 name=h] old(full)[id=1 name=f]",
		"delete public.full_items new[-] old(full)[id=2 name=g]",
		"delete public.items new[-] old(key)[id=2]",
		"insert public.items new[id=3 name=c m=NULL note=n big=small] old[-]",
		"truncate public.items new[-] old[-]",
		"truncate public.full_items new[-] old[-]",
		"insert public.items new[id=4 name=o m=ok note=NULL big=NULL] old[-]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("decoded\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// FuzzDecode feeds framed message sequences to a Decoder: whatever the
// bytes, it returns transactions or errors, never panics.
func FuzzDecode(f *testing.F) {
	msgs := readCapture(f)
	all, _ := os.ReadFile(capturePath)
	f.Add(all)
	for _, m := range msgs {
		f.Add(append(binary.BigEndian.AppendUint32(nil, uint32(len(m))), m...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d := stream.NewDecoder()
		// Prime the relation cache with the captured relations so that
		// mutated changes reach the tuple decoding.
		for _, m := range msgs {
			if m[0] == 'R' {
				if _, err := d.Decode(m); err != nil {
					t.Fatal(err)
				}
			}
		}
		seq, _ := frames(b)
		if len(seq) == 0 {
			seq = [][]byte{b}
		}
		for _, m := range seq {
			txn, err := d.Decode(m)
			if err != nil && !errors.Is(err, stream.ErrDecode) {
				t.Fatalf("error not wrapping ErrDecode: %v", err)
			}
			if err != nil && strings.Contains(err.Error(), "decoder panic") {
				t.Fatalf("the decoder read past what checkLengths checked: %v", err)
			}
			if txn != nil && txn.EndLSN == 0 && txn.CommitLSN == 0 && len(txn.Changes) > 1<<20 {
				t.Fatal("implausible transaction")
			}
		}
	})
}
