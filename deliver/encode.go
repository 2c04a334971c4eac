package deliver

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/stream"
)

// Frames are encoded by hand rather than through encoding/json: they are the
// hot path of delivery (one encoding per transaction and consumer) and their
// shape is fixed. The output is what wire.Frame decodes.

var (
	keepaliveLine = []byte(`{"type":"keepalive"}` + "\n")
)

// appendTxnFrame appends the txn frame of e, restricted to the shapes still
// pending in e, and a newline. part is e's part number on the stream: a
// transaction written as one part (part 1 and last) is the plain frame,
// without part and last; otherwise every part carries "part", the last one
// also "last": true and only the last one "end_lsn". Part and last come
// before the changes so that a reader knows what it reads first.
func appendTxnFrame(b []byte, e *entry, part int) []byte {
	t := e.txn
	whole := part == 1 && e.last
	b = append(b, `{"type":"txn","lsn":"`...)
	b = appendLSN(b, e.commit)
	if e.last {
		b = append(b, `","end_lsn":"`...)
		b = appendLSN(b, e.end)
	}
	b = append(b, `","xid":`...)
	b = strconv.AppendUint(b, uint64(t.Xid), 10)
	b = append(b, `,"commit_time":"`...)
	b = t.CommitTime.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if !whole {
		b = append(b, `,"part":`...)
		b = strconv.AppendInt(b, int64(part), 10)
		if e.last {
			b = append(b, `,"last":true`...)
		}
	}
	b = append(b, `,"changes":[`...)
	first := true
	for i := range t.Changes {
		ch := &t.Changes[i]
		n := 0
		for _, id := range e.shapes[i] {
			if e.pendingHas(id) {
				n++
			}
		}
		if n == 0 {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, `{"shapes":[`...)
		k := 0
		for _, id := range e.shapes[i] {
			if !e.pendingHas(id) {
				continue
			}
			if k > 0 {
				b = append(b, ',')
			}
			k++
			b = appendString(b, id)
		}
		b = append(b, `],"op":`...)
		b = appendString(b, string(ch.Op))
		b = append(b, `,"table":`...)
		b = appendString(b, ch.Table)
		if ch.New != nil {
			b = append(b, `,"new":`...)
			b = appendRow(b, ch.New)
		}
		if ch.Old != nil {
			b = append(b, `,"old":`...)
			b = appendRow(b, ch.Old)
		}
		b = append(b, '}')
	}
	b = append(b, "]}\n"...)
	return b
}

// appendLSN appends l as ledger.LSN.String writes it ("16/B374D848"),
// without its formatting and allocation (two per frame).
func appendLSN(b []byte, l ledger.LSN) []byte {
	b = appendHex(b, uint32(l>>32))
	b = append(b, '/')
	return appendHex(b, uint32(l))
}

// appendHex appends v in upper-case hexadecimal without leading zeros.
func appendHex(b []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	var tmp [8]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = digits[v&0xF]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// appendRow encodes a tuple as an object in column order: text values as
// strings, NULL as null. Columns whose value is unknown are left out, never
// written as null: unchanged TOASTed columns, and the non-key columns of a
// key-only old tuple (the decoder leaves those out of the row), so a
// consumer can tell "NULL" from "not sent" (I1).
func appendRow(b []byte, cols []stream.Column) []byte {
	b = append(b, '{')
	first := true
	for _, c := range cols {
		if c.Kind == stream.KindUnchanged {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, c.Name)
		b = append(b, ':')
		if c.Kind == stream.KindNull {
			b = append(b, "null"...)
		} else {
			b = appendString(b, c.Value)
		}
	}
	return append(b, '}')
}

// appendControl appends a challenge or evicted frame.
func appendControl(b []byte, typ, shape, reason string) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"shape":`...)
	b = appendString(b, shape)
	if reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, reason)
	}
	return append(b, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does, so every frame is valid JSON whatever a row holds.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
