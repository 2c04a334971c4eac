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

func cloneFilter(f map[string][]string) map[string][]string {
	if len(f) == 0 {
		return nil
	}
	out := make(map[string][]string, len(f))
	for k, vs := range f {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// SameDefinition reports whether o defines the same shape as s: the same
// owner, table, filter (compared value by value) and relation binding. The
// id is not compared.
func (s ShapeSpec) SameDefinition(o ShapeSpec) bool {
	return s.Consumer == o.Consumer && s.Table == o.Table && equalFilter(s.Filter, o.Filter) &&
		s.RelID == o.RelID && s.BoundAt == o.BoundAt
}

func equalFilter(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || len(va) != len(vb) {
			return false
		}
		for i := range va {
			if va[i] != vb[i] {
				return false
			}
		}
	}
	return true
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
