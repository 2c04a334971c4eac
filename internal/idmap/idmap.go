// Package idmap is a hash map from a string key to an element that holds
// its key itself, such as a shape and its id. A Go map of the same holds
// the key beside the pointer and keeps its slots at most 7/8 full: about
// 36 bytes an entry on average. A Map holds the pointer and one byte of
// the key's hash, 9 bytes a slot at most 4/5 full: about 15 bytes an
// entry. A million shapes are indexed by id in the ledger and again in the
// router, so the difference is 40 MB.
//
// It is open addressing with linear probing: a search reads the hash bytes
// of the slots in a row and reads an element's key only where its byte
// matches. A deletion shifts the entries behind it back, so that no
// tombstone lengthens later searches (Knuth's algorithm R). It is not safe
// for concurrent use.
package idmap

import (
	"hash/maphash"
	"iter"
)

// Map maps the key of each element to the element. The zero value is not
// usable; call New.
type Map[T any] struct {
	slots []*T
	tags  []uint8 // per slot: 0 when empty, else tagOf the element's key hash
	n     int
	key   func(*T) string
	seed  maphash.Seed
}

// New returns a map whose elements' keys are read with key, sized for n
// elements.
func New[T any](key func(*T) string, n int) *Map[T] {
	m := &Map[T]{key: key, seed: maphash.MakeSeed()}
	m.slots, m.tags = make([]*T, capFor(n)), make([]uint8, capFor(n))
	return m
}

// tagOf is the byte of a hash kept in Map.tags: never 0.
func tagOf(h uint64) uint8 { return uint8(h>>56) | 1 }

// capFor is the number of slots (a power of two, at least 8) that holds n
// elements at most 4/5 full.
func capFor(n int) int {
	c := 8
	for c*4 < n*5 {
		c *= 2
	}
	return c
}

// Len returns the number of elements.
func (m *Map[T]) Len() int { return m.n }

func (m *Map[T]) hash(k string) (int, uint8) {
	h := maphash.String(m.seed, k)
	return int(h & uint64(len(m.slots)-1)), tagOf(h)
}

func (m *Map[T]) home(k string) int {
	i, _ := m.hash(k)
	return i
}

// Get returns the element whose key is k, or nil.
func (m *Map[T]) Get(k string) *T {
	mask := len(m.slots) - 1
	i, tag := m.hash(k)
	for ; ; i = (i + 1) & mask {
		switch m.tags[i] {
		case 0:
			return nil
		case tag:
			if e := m.slots[i]; m.key(e) == k {
				return e
			}
		}
	}
}

// GetBytes is Get of the key string(k), without making that string.
func (m *Map[T]) GetBytes(k []byte) *T {
	mask := len(m.slots) - 1
	h := maphash.Bytes(m.seed, k) // the hash of string(k): maphash hashes bytes and strings alike
	i, tag := int(h&uint64(mask)), tagOf(h)
	for ; ; i = (i + 1) & mask {
		switch m.tags[i] {
		case 0:
			return nil
		case tag:
			if e := m.slots[i]; m.key(e) == string(k) {
				return e
			}
		}
	}
}

// Put adds v, replacing the element with the same key; it returns the
// element replaced, or nil.
func (m *Map[T]) Put(v *T) *T {
	k := m.key(v)
	mask := len(m.slots) - 1
	i, tag := m.hash(k)
	for ; ; i = (i + 1) & mask {
		t := m.tags[i]
		if t == 0 {
			m.slots[i], m.tags[i] = v, tag
			m.n++
			if m.n*5 > len(m.slots)*4 {
				m.resize(len(m.slots) * 2)
			}
			return nil
		}
		if t == tag {
			if e := m.slots[i]; m.key(e) == k {
				m.slots[i] = v
				return e
			}
		}
	}
}

// Delete removes the element whose key is k and returns it, or nil.
func (m *Map[T]) Delete(k string) *T {
	mask := len(m.slots) - 1
	i, tag := m.hash(k)
	for ; ; i = (i + 1) & mask {
		t := m.tags[i]
		if t == 0 {
			return nil
		}
		if t == tag && m.key(m.slots[i]) == k {
			break
		}
	}
	old := m.slots[i]
	// Shift back the entries of the run behind i that may live at i.
	for j := (i + 1) & mask; m.tags[j] != 0; j = (j + 1) & mask {
		h := m.home(m.key(m.slots[j]))
		// The entry at j stays unless its home is cyclically outside (i, j].
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			m.slots[i], m.tags[i] = m.slots[j], m.tags[j]
			i = j
		}
	}
	m.slots[i], m.tags[i] = nil, 0
	m.n--
	if len(m.slots) > 8 && m.n*5 < len(m.slots) {
		m.resize(len(m.slots) / 2)
	}
	return old
}

func (m *Map[T]) resize(size int) {
	old := m.slots
	m.slots, m.tags = make([]*T, size), make([]uint8, size)
	mask := size - 1
	for _, e := range old {
		if e == nil {
			continue
		}
		i, tag := m.hash(m.key(e))
		for m.tags[i] != 0 {
			i = (i + 1) & mask
		}
		m.slots[i], m.tags[i] = e, tag
	}
}

// All yields every element, in no particular order. The map must not be
// changed meanwhile.
func (m *Map[T]) All() iter.Seq[*T] {
	return func(yield func(*T) bool) {
		for _, e := range m.slots {
			if e != nil && !yield(e) {
				return
			}
		}
	}
}
