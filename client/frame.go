package client

import (
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

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

// frameParser reads one frame from a string view of the line's bytes,
// which the stream reuses for the next line: what a frame keeps is copied
// out of it (see frameArena), never sliced from it.
type frameParser struct {
	s string
	i int
	a *frameArena
}

// frameArena holds what the frames of a stream keep: row values and LSNs
// copied into shared chunks of bytes, the *string and *time.Time of row
// values and commit times, and names (frame types, ops, tables, shapes,
// columns), which repeat from frame to frame and are kept once. A
// single-row transaction's frame otherwise allocates its whole line as a
// string, and a chunk of its own for each pointer. A large frame starts
// new chunks, so that a small frame held by the handler never keeps a
// large one's values alive.
type frameArena struct {
	vals  []string
	times []time.Time
	bytes []byte
	names map[string]string
}

// arenaChunk is the length of an arena's chunks of pointers, and
// arenaBytes of its chunks of bytes; arenaShareBytes the largest frame
// whose values share them with other frames, and arenaOwnBytes the
// largest string copied into a chunk (a longer one is allocated on its
// own). maxNames bounds the names an arena keeps.
const (
	arenaChunk      = 32
	arenaBytes      = 4 << 10
	arenaShareBytes = 64 << 10
	arenaOwnBytes   = 512
	maxNames        = 4096
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

// str returns a copy of v, a view of the line. The bytes of a chunk are
// never written again once a string was made of them.
func (a *frameArena) str(v string) string {
	switch {
	case v == "":
		return ""
	case len(v) > arenaOwnBytes:
		return strings.Clone(v)
	case len(v) > cap(a.bytes)-len(a.bytes):
		a.bytes = make([]byte, 0, arenaBytes)
	}
	start := len(a.bytes)
	a.bytes = append(a.bytes, v...)
	return unsafe.String(&a.bytes[start], len(v))
}

// name is str for a string that repeats from frame to frame: the same
// copy each time.
func (a *frameArena) name(v string) string {
	if n, ok := a.names[v]; ok {
		return n
	}
	n := strings.Clone(v)
	if a.names == nil {
		a.names = map[string]string{}
	}
	if len(a.names) < maxNames {
		a.names[n] = n
	}
	return n
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
		*a = frameArena{names: a.names}
	}
	p := frameParser{s: unsafe.String(unsafe.SliceData(line), len(line)), a: a}
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
		f.Type, ok = p.name()
	case "lsn":
		f.LSN, ok = p.copy()
	case "end_lsn":
		f.EndLSN, ok = p.copy()
	case "shape":
		f.Shape, ok = p.name()
	case "reason":
		f.Reason, ok = p.copy()
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
			s, ok := p.name()
			c.Shapes = append(c.Shapes, s)
			return ok
		})
	case "op":
		c.Op, ok = p.name()
	case "table":
		c.Table, ok = p.name()
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
		key = p.a.name(key)
		p.ws()
		if p.lit("null") {
			m[key] = nil
			return true
		}
		v, ok := p.copy()
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

// copy is str, returning a copy of the string that outlives the line.
func (p *frameParser) copy() (string, bool) {
	s, ok := p.str()
	return p.a.str(s), ok
}

// name is copy for a string that repeats from frame to frame.
func (p *frameParser) name() (string, bool) {
	s, ok := p.str()
	if !ok {
		return "", false
	}
	return p.a.name(s), true
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
