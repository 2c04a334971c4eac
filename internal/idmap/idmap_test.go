package idmap

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

type item struct{ id, v string }

func key(it *item) string { return it.id }

// TestMatchesGoMap runs random puts, replacements and deletions, growing
// and shrinking the map, against a Go map.
func TestMatchesGoMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := New(key, 0)
	want := map[string]*item{}
	for round := range 200_000 {
		id := fmt.Sprint(rng.IntN(3000))
		if round > 100_000 { // the second half deletes more than it adds: the map shrinks
			id = fmt.Sprint(rng.IntN(300))
		}
		switch rng.IntN(3) {
		case 0, 1:
			if round > 100_000 && rng.IntN(2) == 0 {
				id = fmt.Sprint(rng.IntN(3000))
				if got, w := m.Delete(id), want[id]; got != w {
					t.Fatalf("round %d: Delete(%s) = %v, want %v", round, id, got, w)
				}
				delete(want, id)
				continue
			}
			it := &item{id: id, v: fmt.Sprint(round)}
			if got, w := m.Put(it), want[id]; got != w {
				t.Fatalf("round %d: Put(%s) replaced %v, want %v", round, id, got, w)
			}
			want[id] = it
		default:
			if got, w := m.Delete(id), want[id]; got != w {
				t.Fatalf("round %d: Delete(%s) = %v, want %v", round, id, got, w)
			}
			delete(want, id)
		}
		if m.Len() != len(want) {
			t.Fatalf("round %d: Len() = %d, want %d", round, m.Len(), len(want))
		}
		if round%10_000 == 0 {
			check(t, m, want)
		}
	}
	check(t, m, want)
	if len(m.slots) > capFor(len(want))*4 {
		t.Fatalf("%d slots for %d elements after deletions", len(m.slots), len(want))
	}
}

func check(t *testing.T, m *Map[item], want map[string]*item) {
	t.Helper()
	for id, it := range want {
		if got := m.Get(id); got != it {
			t.Fatalf("Get(%s) = %v, want %v", id, got, it)
		}
	}
	n := 0
	for it := range m.All() {
		if want[it.id] != it {
			t.Fatalf("All() yields %v, not in the map", it)
		}
		n++
	}
	if n != len(want) {
		t.Fatalf("All() yields %d elements, want %d", n, len(want))
	}
	for id, it := range want {
		if got := m.GetBytes([]byte(id)); got != it {
			t.Fatalf("GetBytes(%s) = %v, want %v", id, got, it)
		}
		break
	}
	if m.Get("absent") != nil || m.GetBytes([]byte("absent")) != nil {
		t.Fatal("Get of an absent key found something")
	}
}
