package ledger

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// maxIDLen bounds consumer and shape ids.
const maxIDLen = 512

// validID rejects ids that would break key ordering (NUL) or bloat keys.
func validID(kind, id string) error {
	if id == "" || len(id) > maxIDLen || strings.ContainsRune(id, 0) {
		return fmt.Errorf("%w: %s id %q must be 1..%d bytes without NUL", ErrInvalid, kind, id, maxIDLen)
	}
	return nil
}

func newLease() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SameDefinition reports whether o defines the same shape as s: the same
// owner, table, filter (compared in canonical form: the order of columns
// and values, and duplicate values, do not count) and relation binding.
// The id is not compared.
func (s ShapeSpec) SameDefinition(o ShapeSpec) bool {
	if s.Consumer != o.Consumer || s.Table != o.Table || s.RelID != o.RelID || s.BoundAt != o.BoundAt {
		return false
	}
	if s.Def != nil && o.Def != nil {
		return s.Def == o.Def || s.Def.filter == o.Def.filter
	}
	return s.canonFilter() == o.canonFilter()
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
