package ledger_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

var modelSeed = flag.Int64("ledger.seed", 0, "seed of the randomized model test (0: LEDGERD_SEED or the time)")

// modelShape is the reference tracker's view of a live shape: plain slices.
type modelShape struct {
	gen                      uint64
	start, flushed, lastSent ledger.LSN
	pend                     []ledger.LSN
}

type modelTxn struct {
	commit, end ledger.LSN
	shapes      []string
}

// model is a naive reference tracker: maps and slices, no heap, recomputed
// from scratch. The ledger must agree with it after every operation.
type model struct {
	shapes  map[string]*modelShape
	tombGen map[string]uint64
	pos     ledger.LSN // processed position since the last open
	floor   ledger.LSN // processed position persisted by earlier opens
	maxPos  ledger.LSN
	next    ledger.LSN
	log     []modelTxn // every transaction "in the slot", for replays
}

func (m *model) safe() ledger.LSN {
	best := ledger.LSN(0)
	for _, s := range m.shapes {
		if len(s.pend) > 0 && (best == 0 || s.pend[0] < best) {
			best = s.pend[0]
		}
	}
	if best != 0 {
		return best
	}
	return m.pos
}

func (m *model) track(tx modelTxn) []string {
	var out []string
	for _, id := range tx.shapes {
		s := m.shapes[id]
		if s == nil || s.flushed >= tx.commit {
			continue
		}
		if tx.commit > s.lastSent {
			s.lastSent = tx.commit
			s.pend = append(s.pend, tx.commit)
		}
		out = append(out, id)
	}
	m.pos = max(m.pos, tx.end)
	m.maxPos = max(m.maxPos, m.pos)
	return out
}

// ackErr is what the ledger must answer: "" nil, "beyond", "gone", "notfound".
func (m *model) ack(id string, lsn ledger.LSN) string {
	s := m.shapes[id]
	switch {
	case s == nil && m.tombGen[id] > 0:
		return "gone"
	case s == nil:
		return "notfound"
	case lsn <= s.flushed:
		return ""
	case lsn > s.lastSent:
		return "beyond"
	}
	for len(s.pend) > 0 && s.pend[0] <= lsn {
		s.pend = s.pend[1:]
	}
	s.flushed = lsn
	return ""
}

func errKind(err error) string {
	var ae *ledger.AckError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ae):
		return "beyond"
	case isGone(err):
		return "gone"
	case errors.Is(err, ledger.ErrNotFound):
		return "notfound"
	}
	return "other: " + err.Error()
}

func seed(t *testing.T) int64 {
	t.Helper()
	s := *modelSeed
	if s == 0 {
		if v := os.Getenv("LEDGERD_SEED"); v != "" {
			var err error
			if s, err = strconv.ParseInt(v, 10, 64); err != nil {
				t.Fatalf("LEDGERD_SEED=%q: %v", v, err)
			}
		}
	}
	if s == 0 {
		s = time.Now().UnixNano()
	}
	t.Logf("seed %d (rerun with -ledger.seed=%d or LEDGERD_SEED=%d)", s, s, s)
	return s
}

// TestModel runs thousands of random Track/Ack/Evict/PutShape/Idle/Sync and
// close-and-reopen operations against the naive model and checks, after each
// one, the safe LSN, the holders, shape positions, FlushLSN monotonicity (I6),
// that FlushLSN never passes a transaction not durably acked by a live shape
// (I1/I6, checked on snapshots of the committed file) and the skip rule after
// a reopen and replay (I2).
func TestModel(t *testing.T) {
	rng := rand.New(rand.NewSource(seed(t)))
	ops := 4000
	if os.Getenv("LEDGERD_CHAOS") != "" {
		ops = 40000
	}
	clk := newClock()
	dir := t.TempDir()
	cfg := testConfig(filepath.Join(dir, "ledger.db"), clk)
	l, err := ledger.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close(); checkBolt(t, cfg.Path) }()
	if _, err := l.Register(ledger.ConsumerSpec{ID: "c", TTL: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	m := &model{shapes: map[string]*modelShape{}, tombGen: map[string]uint64{}, next: 100}
	ids := make([]string, 40)
	for i := range ids {
		ids[i] = fmt.Sprintf("s%02d", i)
	}
	var flush ledger.LSN
	step := 0
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("op %d: %s", step, fmt.Sprintf(format, args...))
	}
	liveIDs := func() []string {
		out := make([]string, 0, len(m.shapes))
		for id := range m.shapes {
			out = append(out, id)
		}
		sort.Strings(out)
		return out
	}

	for step = 0; step < ops; step++ {
		synced := false
		switch r := rng.Intn(100); {
		case r < 35: // Track
			var shapes []string
			for _, i := range rng.Perm(len(ids))[:rng.Intn(6)] {
				shapes = append(shapes, ids[i])
			}
			m.next += ledger.LSN(1 + rng.Intn(200))
			tx := modelTxn{commit: m.next, end: m.next + ledger.LSN(1+rng.Intn(50)), shapes: shapes}
			m.next = tx.end
			m.log = append(m.log, tx)
			want := m.track(tx)
			got := l.Track(tx.commit, tx.end, slices.Clone(tx.shapes))
			if !slices.Equal(got, want) {
				fail("track %s %v = %v, want %v", tx.commit, tx.shapes, got, want)
			}
		case r < 65: // Ack
			live := liveIDs()
			if len(live) == 0 {
				continue
			}
			id := live[rng.Intn(len(live))]
			if rng.Intn(20) == 0 {
				id = ids[rng.Intn(len(ids))] // maybe evicted or unknown
			}
			var lsn ledger.LSN
			if s := m.shapes[id]; s != nil {
				switch k := rng.Intn(10); {
				case k < 4 && len(s.pend) > 0:
					lsn = s.pend[rng.Intn(len(s.pend))]
				case k < 7:
					lsn = s.lastSent
				case k < 8:
					lsn = s.lastSent + 1 + ledger.LSN(rng.Intn(100))
				case k < 9 && s.flushed > 0:
					lsn = s.flushed - 1
				default:
					lsn = s.flushed + ledger.LSN(rng.Intn(300))
				}
			} else {
				lsn = m.next
			}
			want := m.ack(id, lsn)
			if got := errKind(l.Ack(id, lsn)); got != want {
				fail("ack %s %s: %q, want %q", id, lsn, got, want)
			}
		case r < 72: // Sync
			if err := l.Sync(context.Background()); err != nil {
				fail("sync: %v", err)
			}
			synced = true
		case r < 78: // Evict
			id := ids[rng.Intn(len(ids))]
			_, err := l.Evict(id, ledger.ReasonManual, "model", "test")
			s := m.shapes[id]
			switch {
			case s != nil:
				if err != nil {
					fail("evict %s: %v", id, err)
				}
				m.tombGen[id] = s.gen
				delete(m.shapes, id)
			case m.tombGen[id] > 0:
				if !isGone(err) {
					fail("evict evicted %s: %v, want gone", id, err)
				}
			default:
				if !errors.Is(err, ledger.ErrNotFound) {
					fail("evict unknown %s: %v, want not found", id, err)
				}
			}
		case r < 88: // PutShape
			id := ids[rng.Intn(len(ids))]
			sh, created, err := l.PutShape(ledger.ShapeSpec{ID: id, Consumer: "c", Table: "public.t"})
			if err != nil {
				fail("put %s: %v", id, err)
			}
			if s := m.shapes[id]; s != nil {
				if created || sh.Generation != s.gen {
					fail("put existing %s: created %v gen %d, want gen %d", id, created, sh.Generation, s.gen)
				}
				break
			}
			start := max(m.pos, m.floor)
			if start > 0 {
				start--
			}
			s := &modelShape{gen: m.tombGen[id] + 1, start: start, flushed: start}
			if !created || sh.Generation != s.gen || sh.StartLSN != start {
				fail("put %s: created %v gen %d start %s, want gen %d start %s", id, created, sh.Generation, sh.StartLSN, s.gen, start)
			}
			m.shapes[id] = s
		case r < 92: // Idle
			m.next += ledger.LSN(rng.Intn(500))
			if m.next > m.pos {
				l.Idle(m.next)
				m.pos, m.maxPos = m.next, max(m.maxPos, m.next)
			}
			m.next++
		case r < 94: // close and reopen, then replay from the confirmed position
			if err := l.Close(); err != nil {
				fail("close: %v", err)
			}
			checkBolt(t, cfg.Path)
			clk.Advance(time.Minute)
			if l, err = ledger.Open(cfg); err != nil {
				fail("reopen: %v", err)
			}
			m.floor, m.pos = m.maxPos, 0
			for _, s := range m.shapes {
				s.pend, s.lastSent = nil, 0
			}
			confirmed := l.FlushLSN()
			if confirmed < flush {
				fail("flush went back across reopen: %s < %s", confirmed, flush)
			}
			for _, tx := range m.log {
				if tx.commit < confirmed {
					continue // Postgres does not resend what is before confirmed_flush_lsn
				}
				want := m.track(tx)
				if got := l.Track(tx.commit, tx.end, slices.Clone(tx.shapes)); !slices.Equal(got, want) {
					fail("replay track %s %v = %v, want %v (I2 skip rule)", tx.commit, tx.shapes, got, want)
				}
			}
		default: // drop old log entries that no reopen can replay any more
			f := l.FlushLSN()
			i := 0
			for i < len(m.log) && m.log[i].commit < f {
				i++
			}
			m.log = m.log[i:]
		}

		if got, want := l.SafeLSN(), m.safe(); got != want {
			fail("safe = %s, want %s", got, want)
		}
		checkHolders(t, step, l, m)
		if id := ids[rng.Intn(len(ids))]; true {
			sh, ok := l.Shape(id)
			s := m.shapes[id]
			if ok != (s != nil) || (ok && (sh.FlushedLSN != s.flushed || sh.LastSent != s.lastSent || sh.Generation != s.gen)) {
				fail("shape %s = %+v (live %v), model %+v", id, sh, ok, s)
			}
		}
		f := l.FlushLSN()
		if f < flush {
			fail("flush went back: %s < %s (I6)", f, flush)
		}
		if synced && f != max(flush, m.safe()) {
			fail("flush after sync = %s, want %s", f, max(flush, m.safe()))
		}
		flush = f
		if step%40 == 0 {
			if bound := committedSafe(t, l, m, dir); f > bound {
				fail("flush %s is beyond the safe LSN of committed state %s (I6)", f, bound)
			}
		}
	}
}

func checkHolders(t *testing.T, step int, l *ledger.Ledger, m *model) {
	t.Helper()
	type h struct {
		id  string
		lsn ledger.LSN
	}
	var want []h
	for id, s := range m.shapes {
		if len(s.pend) > 0 {
			want = append(want, h{id, s.pend[0]})
		}
	}
	sort.Slice(want, func(i, j int) bool {
		if want[i].lsn != want[j].lsn {
			return want[i].lsn < want[j].lsn
		}
		return want[i].id < want[j].id
	})
	got := l.Holders(0)
	if len(got) != len(want) {
		t.Fatalf("op %d: %d holders, want %d", step, len(got), len(want))
	}
	for i := range got {
		if got[i].ID != want[i].id || got[i].PendingLSN != want[i].lsn {
			t.Fatalf("op %d: holder %d = %s@%s, want %s@%s", step, i, got[i].ID, got[i].PendingLSN, want[i].id, want[i].lsn)
		}
	}
	if n := min(3, len(want)); n > 0 {
		if top := l.Holders(n); len(top) != n || top[n-1].ID != want[n-1].id {
			t.Fatalf("op %d: Holders(%d) = %v", step, n, top)
		}
	}
}

// committedSafe computes, from a snapshot of the committed file, the
// smallest commit LSN routed to a live shape and not durably acked by it, or
// the processed position when there is none: the most FlushLSN may report.
func committedSafe(t *testing.T, l *ledger.Ledger, m *model, dir string) ledger.LSN {
	t.Helper()
	path := filepath.Join(dir, "snapshot.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.WriteSnapshot(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := ledger.Load(path)
	if err != nil {
		t.Fatalf("load snapshot: %v", err)
	}
	durable := map[string]ledger.Shape{}
	for _, sh := range st.Shapes {
		durable[sh.ID] = sh
	}
	bound := m.maxPos
	for _, tx := range m.log {
		for _, id := range tx.shapes {
			s := m.shapes[id]
			d, ok := durable[id]
			if s == nil || !ok || d.Generation != s.gen || tx.commit <= s.start || tx.commit <= d.FlushedLSN {
				continue
			}
			bound = min(bound, tx.commit)
		}
	}
	return bound
}
