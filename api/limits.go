package api

import (
	"net/http"
	"strconv"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/api/wire"
)

// Limits bound what one request, one consumer and all consumers together
// may ask of the daemon, so that no client can make routing slow for
// everyone or grow the ledger file without bound. Zero fields mean the
// default.
type Limits struct {
	// MaxFilterColumns is the most columns one shape's filter may name.
	// Default 64.
	MaxFilterColumns int
	// MaxFilterValues is the most values one filter may list over all its
	// columns. Default 10000.
	MaxFilterValues int
	// MaxValueBytes is the longest filter value, in bytes. Default 1024.
	MaxValueBytes int
	// MaxShapesPerConsumer is the most live shapes one consumer may own.
	// Default 10000.
	MaxShapesPerConsumer int
	// MaxConsumers is the most consumers holding a lease at once.
	// Default 10000.
	MaxConsumers int
}

// Defaults of Limits.
const (
	DefaultMaxFilterColumns     = 64
	DefaultMaxFilterValues      = 10000
	DefaultMaxValueBytes        = 1024
	DefaultMaxShapesPerConsumer = 10000
	DefaultMaxConsumers         = 10000
)

// Fixed bounds, not configurable: they follow from what the fields are.
const (
	maxIDBytes         = 128
	maxColumnNameBytes = 63 // Postgres truncates identifiers to 63 bytes (NAMEDATALEN - 1)
	maxHostBytes       = 255
	maxProcStartBytes  = 64
)

// idRule is the rule for consumer and shape ids, as error messages state it.
const idRule = `1 to 128 characters from A-Za-z0-9._:- and neither "." nor ".."`

func (l Limits) withDefaults() Limits {
	if l.MaxFilterColumns <= 0 {
		l.MaxFilterColumns = DefaultMaxFilterColumns
	}
	if l.MaxFilterValues <= 0 {
		l.MaxFilterValues = DefaultMaxFilterValues
	}
	if l.MaxValueBytes <= 0 {
		l.MaxValueBytes = DefaultMaxValueBytes
	}
	if l.MaxShapesPerConsumer <= 0 {
		l.MaxShapesPerConsumer = DefaultMaxShapesPerConsumer
	}
	if l.MaxConsumers <= 0 {
		l.MaxConsumers = DefaultMaxConsumers
	}
	return l
}

// validID accepts ids that read well and unambiguously in URLs, logs,
// metrics and inspect's output: no invalid UTF-8, no bidi overrides or
// other invisible characters, no path segments of their own.
func validID(kind, id string) *apiError {
	ok := id != "" && len(id) <= maxIDBytes && id != "." && id != ".."
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
	}
	if !ok {
		return errorf(http.StatusUnprocessableEntity, wire.CodeInvalidID, "%s id %s is not valid: an id is %s", kind, clip(id), idRule)
	}
	return nil
}

// checkFilter enforces the filter limits. The router's cost per change does
// not grow with a filter's width, but its memory and the shape's record do.
func (l Limits) checkFilter(f map[string][]string) *apiError {
	if len(f) > l.MaxFilterColumns {
		return errorf(http.StatusUnprocessableEntity, wire.CodeFilterTooLarge,
			"the filter names %d columns; at most %d are allowed (-max-filter-columns): filter on fewer columns or split the shape",
			len(f), l.MaxFilterColumns)
	}
	n := 0
	for col, vals := range f {
		if col == "" || len(vals) == 0 {
			return errorf(http.StatusBadRequest, wire.CodeInvalid,
				"filter column %s lists no values; list the allowed values or leave the column out", clip(col))
		}
		if len(col) > maxColumnNameBytes {
			return errorf(http.StatusUnprocessableEntity, wire.CodeValueTooLong,
				"filter column %s is %d bytes; a Postgres column name is at most %d bytes", clip(col), len(col), maxColumnNameBytes)
		}
		for _, v := range vals {
			if len(v) > l.MaxValueBytes {
				return errorf(http.StatusUnprocessableEntity, wire.CodeValueTooLong,
					"a value of filter column %s is %d bytes; at most %d are allowed (-max-value-bytes)", clip(col), len(v), l.MaxValueBytes)
			}
		}
		n += len(vals)
	}
	if n > l.MaxFilterValues {
		return errorf(http.StatusUnprocessableEntity, wire.CodeFilterTooLarge,
			"the filter lists %d values; at most %d are allowed (-max-filter-values): split the shape", n, l.MaxFilterValues)
	}
	return nil
}

// checkField bounds a free-form registration field that is stored in the
// consumer's record and journaled.
func checkField(name, v string, maxBytes int) *apiError {
	if len(v) > maxBytes {
		return errorf(http.StatusUnprocessableEntity, wire.CodeValueTooLong, "%s is %d bytes; at most %d are allowed", name, len(v), maxBytes)
	}
	for _, r := range v {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return errorf(http.StatusBadRequest, wire.CodeInvalid,
				"%s %s holds invalid UTF-8 or a non-printable character; send printable text of at most %d bytes", name, clip(v), maxBytes)
		}
	}
	return nil
}

// clip quotes s for an error message, cut to 64 bytes.
func clip(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}

// admissions counts creations admitted under a count limit and not yet
// finished, by key (a consumer for shapes, "" for consumers), so that
// concurrent requests cannot pass a limit together without a lock being
// held across the ledger's write.
type admissions struct {
	mu       sync.Mutex
	inFlight map[string]int
}

// admit admits one creation if what exists (count) plus what is in flight is
// below max. It returns the number counted and, when admitted, a release
// to call once the creation is done or failed.
func (a *admissions) admit(key string, max int, count func() int) (n int, release func(), ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n = count() + a.inFlight[key]
	if n >= max {
		return n, nil, false
	}
	if a.inFlight == nil {
		a.inFlight = map[string]int{}
	}
	a.inFlight[key]++
	return n, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.inFlight[key]--; a.inFlight[key] == 0 {
			delete(a.inFlight, key)
		}
	}, true
}

// admitConsumer admits a new lease while fewer than MaxConsumers consumers
// hold one. A consumer registering again under its own id is not counted
// here (a live one gets its 409 from the ledger).
func (s *Server) admitConsumer(id string) (func(), *apiError) {
	if c, ok := s.l.Consumer(id); ok && !c.Gone && (c.Streaming || s.now().Before(c.ExpiresAt)) {
		return func() {}, nil
	}
	n, release, ok := s.admitted.admit("", s.limits.MaxConsumers, func() int { return s.l.Stats().LiveConsumers })
	if !ok {
		return nil, errorf(http.StatusTooManyRequests, wire.CodeTooManyConsumers,
			"%d consumers hold a lease, the most allowed (-max-consumers %d): release consumers no longer needed (DELETE /v1/consumers/{id}) or raise the limit",
			n, s.limits.MaxConsumers)
	}
	return release, nil
}

// admitShape admits a new shape while its consumer owns fewer than
// MaxShapesPerConsumer; the same shape put again is not new.
func (s *Server) admitShape(id, consumer string) (func(), *apiError) {
	if _, ok := s.l.ShapeDef(id); ok {
		return func() {}, nil
	}
	n, release, ok := s.admitted.admit(consumer, s.limits.MaxShapesPerConsumer, func() int { return s.l.ShapeCount(consumer) })
	if !ok {
		return nil, errorf(http.StatusTooManyRequests, wire.CodeTooManyShapes,
			"consumer %s owns %d shapes, the most allowed (-max-shapes-per-consumer %d): delete shapes no longer needed or raise the limit",
			clip(consumer), n, s.limits.MaxShapesPerConsumer)
	}
	return release, nil
}

// checkInventory bounds a heartbeat's shape list, which is kept in the
// consumer's record: no more entries than a consumer may own, each a valid
// id or the id of a live shape (created before the id rule).
func (s *Server) checkInventory(ids []string) *apiError {
	if len(ids) > s.limits.MaxShapesPerConsumer {
		return errorf(http.StatusBadRequest, wire.CodeInvalid,
			"the inventory lists %d shapes; a consumer owns at most %d (-max-shapes-per-consumer)", len(ids), s.limits.MaxShapesPerConsumer)
	}
	for _, id := range ids {
		if e := validID("shape", id); e != nil && !s.knownShape(id) {
			return e
		}
	}
	return nil
}

// knownConsumer and knownShape let ids the ledger already holds, created
// before the id rule, keep working: a consumer registering again under its
// id, or putting its shape again after a reconnect, must not be refused.
func (s *Server) knownConsumer(id string) bool {
	_, ok := s.l.Consumer(id)
	return ok
}

func (s *Server) knownShape(id string) bool {
	_, ok := s.l.ShapeDef(id)
	return ok
}
