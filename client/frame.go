package client

import (
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/api/wire"
)

// Frames are decoded by hand when they have the form ledgerd writes: one
// object a line, the keys of wire.Frame and wire.Change spelled as the
// daemon spells them, strings without escapes. Reading a stream is the
// consumer's hot path, and encoding/json spends most of it in reflection
// and in allocating each string on its own. Anything else (an escape, a
// key in another case, a null where a value is expected, malformed input)
// goes to encoding/json, so the result is always the one encoding/json
// gives, errors included.

// decodeFrame decodes one line into f.
func decodeFrame(line []byte, f *wire.Frame) error { return decodeFrameIn(line, f, nil) }

// decodeFrameIn is decodeFrame carving row values and commit times from a
// (nil: an arena of the frame's own).
func decodeFrameIn(line []byte, f *wire.Frame, a *frameArena) error {
	if parseFrameIn(line, f, a) {
		return nil
	}
	*f = wire.Frame{}
	return json.Unmarshal(line, f)
}

// frameParser reads one frame. Every string it returns is a substring of
// s, the line converted once: one allocation for all the names and
// values of a frame, which live as long as the frame's changes do.
type frameParser struct {
	s string
	i int
	a *frameArena
}

// frameArena holds the row values and commit times a frame's *string and
// *time.Time point to, allocated in chunks that a stream's small frames
// share: a single-row transaction's frame otherwise allocates a chunk of
// its own for each. A large frame starts new chunks, so that a small
// frame held by the handler never keeps a large one's line alive.
type frameArena struct {
	vals  []string
	times []time.Time
}

// arenaChunk is the length of an arena's chunks; arenaShareBytes the
// largest frame whose values share them with other frames.
const (
	arenaChunk      = 32
	arenaShareBytes = 64 << 10
)

func (a *frameArena) val(v string) *string {
	if len(a.vals) == cap(a.vals) {
		a.vals = make([]string, 0, arenaChunk)
	}
	a.vals = append(a.vals, v)
	return &a.vals[len(a.vals)-1]
}

func (a *frameArena) time() *time.Time {
	if len(a.times) == cap(a.times) {
		a.times = make([]time.Time, 0, arenaChunk)
	}
	a.times = a.times[:len(a.times)+1]
	return &a.times[len(a.times)-1]
}

// parseFrame decodes line into f and reports whether it could; when it
// could not, f is to be discarded.
func parseFrame(line []byte, f *wire.Frame) bool { return parseFrameIn(line, f, nil) }

// parseFrameIn is parseFrame with the arena a (see decodeFrameIn).
func parseFrameIn(line []byte, f *wire.Frame, a *frameArena) bool {
	if a == nil {
		a = &frameArena{}
	}
	if len(line) > arenaShareBytes {
		*a = frameArena{}
	}
	p := frameParser{s: string(line), a: a}
	var seen fields
	if !p.object(func(key string) bool { return seen.first(key) && p.frameField(key, f) }) {
		return false
	}
	p.ws()
	return p.i == len(p.s)
}

// fields are the keys of an object read so far. A key seen again is left
// to encoding/json, which decodes the second value into the first.
// Each known key fits (wire.Frame has 10).
type fields struct {
	keys [10]string
	n    int
}

func (fs *fields) first(key string) bool {
	for _, k := range fs.keys[:fs.n] {
		if k == key {
			return false
		}
	}
	if fs.n == len(fs.keys) {
		return false
	}
	fs.keys[fs.n] = key
	fs.n++
	return true
}

func (p *frameParser) frameField(key string, f *wire.Frame) bool {
	var ok bool
	switch key {
	case "type":
		f.Type, ok = p.str()
	case "lsn":
		f.LSN, ok = p.str()
	case "end_lsn":
		f.EndLSN, ok = p.str()
	case "shape":
		f.Shape, ok = p.str()
	case "reason":
		f.Reason, ok = p.str()
	case "xid":
		var n uint64
		n, ok = p.uint(1<<32 - 1)
		f.Xid = uint32(n)
	case "part":
		var n uint64
		n, ok = p.uint(1<<31 - 1)
		f.Part = int(n)
	case "last":
		f.Last, ok = p.boolean()
	case "commit_time":
		p.ws()
		start := p.i
		if _, ok = p.str(); !ok {
			return false
		}
		t := p.a.time()
		if t.UnmarshalJSON([]byte(p.s[start:p.i])) != nil {
			*t = time.Time{}
			return false
		}
		f.CommitTime = t
	case "changes":
		f.Changes = f.Changes[:0]
		if f.Changes == nil {
			f.Changes = []wire.Change{}
		}
		ok = p.array(func() bool {
			var c wire.Change
			var seen fields
			if !p.object(func(key string) bool { return seen.first(key) && p.changeField(key, &c) }) {
				return false
			}
			f.Changes = append(f.Changes, c)
			return true
		})
	}
	return ok
}

func (p *frameParser) changeField(key string, c *wire.Change) bool {
	var ok bool
	switch key {
	case "shapes":
		c.Shapes = c.Shapes[:0]
		if c.Shapes == nil {
			c.Shapes = []string{}
		}
		ok = p.array(func() bool {
			s, ok := p.str()
			c.Shapes = append(c.Shapes, s)
			return ok
		})
	case "op":
		c.Op, ok = p.str()
	case "table":
		c.Table, ok = p.str()
	case "new":
		c.New, ok = p.row(c.New)
	case "old":
		c.Old, ok = p.row(c.Old)
	}
	return ok
}

// row reads a row object: column -> string or null. A key seen again
// replaces the earlier value, as with encoding/json.
func (p *frameParser) row(m map[string]*string) (map[string]*string, bool) {
	if m == nil {
		m = map[string]*string{}
	}
	ok := p.object(func(key string) bool {
		p.ws()
		if p.lit("null") {
			m[key] = nil
			return true
		}
		v, ok := p.str()
		if !ok {
			return false
		}
		m[key] = p.a.val(v)
		return true
	})
	return m, ok
}

func (p *frameParser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// lit consumes s if it comes next.
func (p *frameParser) lit(s string) bool {
	if len(p.s)-p.i >= len(s) && p.s[p.i:p.i+len(s)] == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *frameParser) next(c byte) bool {
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// object reads {"key": value, ...}, calling field for each key with the
// value next; an unknown key is not read here (false).
func (p *frameParser) object(field func(key string) bool) bool {
	if !p.next('{') {
		return false
	}
	if p.next('}') {
		return true
	}
	for {
		key, ok := p.str()
		if !ok || !p.next(':') || !field(key) {
			return false
		}
		if p.next('}') {
			return true
		}
		if !p.next(',') {
			return false
		}
	}
}

// array reads [elem, ...].
func (p *frameParser) array(elem func() bool) bool {
	if !p.next('[') {
		return false
	}
	if p.next(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if p.next(']') {
			return true
		}
		if !p.next(',') {
			return false
		}
	}
}

// str reads a string without escapes, control characters or invalid
// UTF-8 (those are left to encoding/json).
func (p *frameParser) str() (string, bool) {
	if !p.next('"') {
		return "", false
	}
	start := p.i
	ascii := true
	for ; p.i < len(p.s); p.i++ {
		c := p.s[p.i]
		switch {
		case c == '"':
			s := p.s[start:p.i]
			p.i++
			return s, ascii || utf8.ValidString(s)
		case c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// uint reads a non-negative integer up to max, in the plain form the
// daemon writes.
func (p *frameParser) uint(max uint64) (uint64, bool) {
	p.ws()
	start := p.i
	var n uint64
	for ; p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9'; p.i++ {
		n = n*10 + uint64(p.s[p.i]-'0')
		if n > max {
			return 0, false
		}
	}
	digits := p.i - start
	if digits == 0 || digits > 1 && p.s[start] == '0' {
		return 0, false
	}
	if p.i < len(p.s) {
		switch p.s[p.i] {
		case '.', 'e', 'E':
			return 0, false // a fraction or an exponent: encoding/json decides
		}
	}
	return n, true
}

func (p *frameParser) boolean() (bool, bool) {
	p.ws()
	if p.lit("true") {
		return true, true
	}
	if p.lit("false") {
		return false, true
	}
	return false, false
}
