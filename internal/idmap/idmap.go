// Package idmap is a hash map from a string key to an element that holds
// its key itself, such as a shape and its id. A Go map of the same holds
// the key beside the pointer and keeps its slots at most 7/8 full: about
// 36 bytes an entry on average. A Map holds the pointer alone, 8 bytes a
// slot at most 4/5 full: about 14 bytes an entry. A million shapes are
// indexed by id in the ledger and again in the router, so the difference
// is 40 MB.
//
// It is open addressing with linear probing, and a deletion shifts the
// entries behind it back, so that no tombstone lengthens later searches
// (Knuth's algorithm R). It is not safe for concurrent use.
package idmap

import (
	"hash/maphash"
	"iter"
)

// Map maps the key of each element to the element. The zero value is not
// usable; call New.
type Map[T any] struct {
	slots []*T
	n     int
	key   func(*T) string
	seed  maphash.Seed
}

// New returns a map whose elements' keys are read with key, sized for n
// elements.
func New[T any](key func(*T) string, n int) *Map[T] {
	m := &Map[T]{key: key, seed: maphash.MakeSeed()}
	m.slots = make([]*T, capFor(n))
	return m
}

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

func (m *Map[T]) home(k string) int {
	return int(maphash.String(m.seed, k) & uint64(len(m.slots)-1))
}

// Get returns the element whose key is k, or nil.
func (m *Map[T]) Get(k string) *T {
	mask := len(m.slots) - 1
	for i := m.home(k); ; i = (i + 1) & mask {
		e := m.slots[i]
		if e == nil {
			return nil
		}
		if m.key(e) == k {
			return e
		}
	}
}

// Put adds v, replacing the element with the same key; it returns the
// element replaced, or nil.
func (m *Map[T]) Put(v *T) *T {
	k := m.key(v)
	mask := len(m.slots) - 1
	for i := m.home(k); ; i = (i + 1) & mask {
		e := m.slots[i]
		if e == nil {
			m.slots[i] = v
			m.n++
			if m.n*5 > len(m.slots)*4 {
				m.resize(len(m.slots) * 2)
			}
			return nil
		}
		if m.key(e) == k {
			m.slots[i] = v
			return e
		}
	}
}

// Delete removes the element whose key is k and returns it, or nil.
func (m *Map[T]) Delete(k string) *T {
	mask := len(m.slots) - 1
	i := m.home(k)
	for {
		e := m.slots[i]
		if e == nil {
			return nil
		}
		if m.key(e) == k {
			break
		}
		i = (i + 1) & mask
	}
	old := m.slots[i]
	// Shift back the entries of the run behind i that may live at i.
	for j := (i + 1) & mask; m.slots[j] != nil; j = (j + 1) & mask {
		h := m.home(m.key(m.slots[j]))
		// The entry at j stays unless its home is cyclically outside (i, j].
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			m.slots[i] = m.slots[j]
			i = j
		}
	}
	m.slots[i] = nil
	m.n--
	if len(m.slots) > 8 && m.n*5 < len(m.slots) {
		m.resize(len(m.slots) / 2)
	}
	return old
}

func (m *Map[T]) resize(size int) {
	old := m.slots
	m.slots = make([]*T, size)
	mask := size - 1
	for _, e := range old {
		if e == nil {
			continue
		}
		i := m.home(m.key(e))
		for m.slots[i] != nil {
			i = (i + 1) & mask
		}
		m.slots[i] = e
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
