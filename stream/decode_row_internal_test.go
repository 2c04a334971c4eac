package stream

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
)

// referenceRow decodes a tuple as the decoder did through pglogrepl's
// parser, for comparison.
func referenceRow(r *relation, t *pglogrepl.TupleData, keyOnly bool) []Column {
	if t == nil {
		return nil
	}
	row := make([]Column, 0, len(t.Columns))
	for i, c := range t.Columns {
		col := Column{Name: r.columns[i]}
		switch c.DataType {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			col.Kind, col.Value = KindText, string(c.Data)
		case pglogrepl.TupleDataTypeNull:
			if keyOnly && !r.key[i] {
				continue
			}
			col.Kind = KindNull
		case pglogrepl.TupleDataTypeToast:
			col.Kind = KindUnchanged
		}
		row = append(row, col)
	}
	return row
}

// checkRowDecoding decodes a row change both ways, with a relation of as
// many columns as its tuple has (every other one a key column), and
// fails on any difference or panic.
func checkRowDecoding(t *testing.T, msg []byte) {
	if len(msg) < 8 || !strings.ContainsRune("IUD", rune(msg[0])) || checkLengths(msg) != nil {
		return
	}
	m, err := pglogrepl.Parse(msg)
	if err != nil {
		// pglogrepl refuses a tuple of no columns (a table without
		// columns), which checkLengths and the decoder take.
		return
	}
	var newTup, oldTup *pglogrepl.TupleData
	var oldType uint8
	switch m := m.(type) {
	case *pglogrepl.InsertMessage:
		newTup = m.Tuple
	case *pglogrepl.UpdateMessage:
		newTup, oldTup, oldType = m.NewTuple, m.OldTuple, m.OldTupleType
	case *pglogrepl.DeleteMessage:
		oldTup, oldType = m.OldTuple, m.OldTupleType
	}
	n := 0
	if newTup != nil {
		n = len(newTup.Columns)
	} else {
		n = len(oldTup.Columns)
	}
	if oldTup != nil && newTup != nil && len(oldTup.Columns) != n {
		return // refused for its column count either way
	}
	rel := &relation{name: "public.t", columns: make([]string, n), key: make([]bool, n)}
	for i := range n {
		rel.columns[i], rel.key[i] = fmt.Sprintf("c%d", i), i%2 == 0
	}
	d := NewDecoder()
	d.relations[binary.BigEndian.Uint32(msg[1:])] = rel
	d.txn = &Txn{}
	if _, err := d.decodeRow(msg); err != nil {
		t.Fatalf("decoding %x: %v", msg, err)
	}
	keyOnly := oldType == pglogrepl.UpdateMessageTupleTypeKey
	got := d.txn.Changes[0]
	if want := referenceRow(rel, newTup, false); !reflect.DeepEqual(got.New, want) {
		t.Fatalf("%x: new row %+v, want %+v", msg, got.New, want)
	}
	if want := referenceRow(rel, oldTup, keyOnly); !reflect.DeepEqual(got.Old, want) {
		t.Fatalf("%x: old row %+v, want %+v", msg, got.Old, want)
	}
}

// FuzzRowDecoding: row changes decoded straight from the bytes are what
// pglogrepl's parser gives.
func FuzzRowDecoding(f *testing.F) {
	be := binary.BigEndian
	tuple := func(b []byte, cols ...string) []byte {
		b = be.AppendUint16(b, uint16(len(cols)))
		for _, c := range cols {
			switch c {
			case "NULL":
				b = append(b, 'n')
			case "TOAST":
				b = append(b, 'u')
			default:
				b = append(be.AppendUint32(append(b, 't'), uint32(len(c))), c...)
			}
		}
		return b
	}
	head := func(typ, marker byte) []byte { return append(be.AppendUint32([]byte{typ}, 16384), marker) }
	f.Add(tuple(head('I', 'N'), "1", "NULL", "value é"))
	f.Add(tuple(append(tuple(head('U', 'K'), "1", "NULL", "NULL"), 'N'), "2", "x", "TOAST"))
	f.Add(tuple(append(tuple(head('U', 'O'), "1", "a", "NULL"), 'N'), "1", "b", ""))
	f.Add(tuple(head('U', 'N'), "1", "b", "TOAST"))
	f.Add(tuple(head('D', 'K'), "1", "NULL"))
	f.Add(tuple(head('D', 'O'), "1", "a", "b", "c"))
	f.Add(tuple(head('I', 'N'))) // a table without columns
	f.Fuzz(checkRowDecoding)
}
