package ledger_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/rs/zerolog"
)

const crashChildEnv = "LEDGERD_LEDGER_CRASH_CHILD"

// crashChild is the workload the crash test kills: it opens the ledger,
// registers a consumer, and loops creating, tracking, acking, syncing and
// evicting shapes. It prints each fact once it is durable: "A id gen lsn"
// after the Sync that covers the ack returned, "E id gen" after Evict
// returned, "F lsn" for FlushLSN after a Sync.
func crashChild(path string) int {
	seed, _ := strconv.ParseInt(os.Getenv(crashChildEnv+"_SEED"), 10, 64)
	rng := rand.New(rand.NewSource(seed))
	out := os.Stdout
	cfg := ledger.Config{Path: path, Identity: testIdentity, Logger: zerolog.Nop(), DefaultTTL: time.Second}
	l, err := ledger.Open(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		return 3
	}
	consumer := fmt.Sprintf("c-%d", os.Getpid())
	if _, err := l.Register(ledger.ConsumerSpec{ID: consumer}); err != nil {
		fmt.Fprintln(os.Stderr, "child register:", err)
		return 3
	}
	// Commit LSNs must lie beyond anything the file has seen.
	lsn := ledger.LSN(time.Now().UnixNano())
	lsn = max(lsn, l.FlushLSN()+1000)
	for _, sh := range l.Shapes() {
		lsn = max(lsn, sh.FlushedLSN+1000)
	}
	fmt.Fprintln(out, "R")
	owned := map[string]uint64{}
	type ack struct {
		gen uint64
		lsn ledger.LSN
	}
	acked := map[string]ack{}
	fatal := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", what, err)
		return 4
	}
	for i := 0; ; i++ {
		if id := fmt.Sprintf("s%02d", rng.Intn(30)); owned[id] == 0 && rng.Intn(3) == 0 {
			sh, _, err := l.PutShape(ledger.ShapeSpec{ID: id, Consumer: consumer, Table: "public.t"})
			if errors.Is(err, ledger.ErrShapeConflict) {
				ts, eerr := l.Evict(id, ledger.ReasonManual, "taken over", "crash-test")
				if eerr != nil {
					return fatal("evict", eerr)
				}
				fmt.Fprintf(out, "E %s %d\n", id, ts.Generation)
				sh, _, err = l.PutShape(ledger.ShapeSpec{ID: id, Consumer: consumer, Table: "public.t"})
			}
			if err != nil {
				return fatal("put", err)
			}
			owned[id] = sh.Generation
		}
		var to []string
		for id := range owned {
			if rng.Intn(2) == 0 {
				to = append(to, id)
			}
		}
		lsn += 100
		l.Track(lsn, lsn+10, to)
		for id, gen := range owned {
			sh, ok := l.Shape(id)
			if !ok || rng.Intn(3) == 0 || sh.LastSent <= sh.FlushedLSN {
				continue
			}
			at := sh.LastSent
			if rng.Intn(3) == 0 {
				at = sh.PendingLSN // a partial ack
			}
			if err := l.Ack(id, at); err != nil {
				return fatal("ack", err)
			}
			acked[id] = ack{gen, at}
		}
		if i%4 == 0 {
			if err := l.Sync(context.Background()); err != nil {
				return fatal("sync", err)
			}
			for id, a := range acked {
				fmt.Fprintf(out, "A %s %d %d\n", id, a.gen, a.lsn)
			}
			clear(acked)
			fmt.Fprintf(out, "F %d\n", l.FlushLSN())
		}
		if i%25 == 0 {
			if err := l.RecordTick(time.Now()); err != nil {
				return fatal("tick", err)
			}
		}
		if rng.Intn(15) == 0 {
			for id := range owned {
				ts, err := l.Evict(id, ledger.ReasonStalled, "crash test", "crash-test")
				if err != nil {
					return fatal("evict", err)
				}
				fmt.Fprintf(out, "E %s %d\n", id, ts.Generation)
				delete(owned, id)
				delete(acked, id)
				break
			}
		}
	}
}

type genKey struct {
	id  string
	gen uint64
}

// TestCrashKill runs the child workload and SIGKILLs it at random moments,
// many times over the same file, and after each kill checks: bbolt's
// consistency check; every eviction the child saw return is still there and
// its id is not live at that generation or below (I4); every ack the child
// saw made durable is still covered by the shape's flushed LSN (or by the
// tombstone of a later eviction), and the recorded flush position never went
// below what was reported, nor backwards between rounds (I6).
func TestCrashKill(t *testing.T) {
	rounds := 20
	if os.Getenv("LEDGERD_CHAOS") != "" {
		rounds = 200
	}
	rng := rand.New(rand.NewSource(seed(t)))
	path := filepath.Join(t.TempDir(), "ledger.db")
	evicted := map[genKey]bool{}
	acks := map[genKey]ledger.LSN{}
	var reported, lastMeta ledger.LSN
	for round := 0; round < rounds; round++ {
		lines := runAndKill(t, path, rng.Int63(), time.Duration(5+rng.Intn(150))*time.Millisecond)
		for _, ln := range lines {
			f := strings.Fields(ln)
			switch {
			case f[0] == "E" && len(f) == 3:
				gen, _ := strconv.ParseUint(f[2], 10, 64)
				evicted[genKey{f[1], gen}] = true
			case f[0] == "A" && len(f) == 4:
				gen, _ := strconv.ParseUint(f[2], 10, 64)
				v, _ := strconv.ParseUint(f[3], 10, 64)
				k := genKey{f[1], gen}
				acks[k] = max(acks[k], ledger.LSN(v))
			case f[0] == "F" && len(f) == 2:
				v, _ := strconv.ParseUint(f[1], 10, 64)
				reported = max(reported, ledger.LSN(v))
			}
		}
		checkBolt(t, path)
		if probs, err := ledger.Verify(path); err != nil || len(probs) > 0 {
			t.Fatalf("round %d: verify: %v %v", round, err, probs)
		}
		st, err := ledger.Load(path)
		if err != nil {
			t.Fatalf("round %d: load: %v", round, err)
		}
		live := map[string]ledger.Shape{}
		for _, sh := range st.Shapes {
			live[sh.ID] = sh
		}
		tombs := map[genKey]ledger.Tombstone{}
		for _, ts := range st.Tombstones {
			tombs[genKey{ts.Shape, ts.Generation}] = ts
		}
		for k := range evicted {
			if _, ok := tombs[k]; !ok {
				t.Fatalf("round %d: tombstone of %s generation %d is gone (I4)", round, k.id, k.gen)
			}
			if sh, ok := live[k.id]; ok && sh.Generation <= k.gen {
				t.Fatalf("round %d: %s is live at generation %d after eviction of generation %d (I4)", round, k.id, sh.Generation, k.gen)
			}
		}
		for k, v := range acks {
			if sh, ok := live[k.id]; ok && sh.Generation == k.gen {
				if sh.FlushedLSN < v {
					t.Fatalf("round %d: shape %s flushed %s, below the durable ack %s (I6)", round, k.id, sh.FlushedLSN, v)
				}
				continue
			}
			ts, ok := tombs[k]
			if !ok {
				t.Fatalf("round %d: shape %s generation %d vanished without a tombstone", round, k.id, k.gen)
			}
			if ts.FlushedLSN < v {
				t.Fatalf("round %d: tombstone of %s records flushed %s, below the durable ack %s", round, k.id, ts.FlushedLSN, v)
			}
		}
		if st.Meta.LastFlush < reported || st.Meta.LastFlush < lastMeta {
			t.Fatalf("round %d: recorded flush %s, reported %s, previous round %s (I6)", round, st.Meta.LastFlush, reported, lastMeta)
		}
		lastMeta = st.Meta.LastFlush
		if round == rounds-1 {
			t.Logf("%d rounds: %d evictions, %d durable acks, flush %s, %d shapes live", rounds, len(evicted), len(acks), lastMeta, len(live))
		}
	}
	if len(acks) == 0 || len(evicted) == 0 {
		t.Fatalf("the child made no durable acks (%d) or evictions (%d): the test checked nothing", len(acks), len(evicted))
	}
}

// runAndKill starts the child on path, lets it run for d after it is ready,
// SIGKILLs it and returns the complete lines it printed.
func runAndKill(t *testing.T, path string, seed int64, d time.Duration) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path, crashChildEnv+"_SEED="+strconv.FormatInt(seed, 10))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	linesc := make(chan []string, 1)
	ready := make(chan struct{})
	go func() {
		var lines []string
		r := bufio.NewReader(stdout)
		for {
			ln, err := r.ReadString('\n')
			if err != nil {
				if err != io.EOF {
					t.Errorf("reading child output: %v", err)
				}
				break // a line without its newline was cut by the kill: not a fact
			}
			ln = strings.TrimSuffix(ln, "\n")
			if ln == "R" {
				close(ready)
				continue
			}
			lines = append(lines, ln)
		}
		linesc <- lines
	}()
	select {
	case <-ready:
		time.Sleep(d)
	case <-time.After(30 * time.Second):
		t.Error("child did not become ready")
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	lines := <-linesc
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v before it was killed; stderr:\n%s", err, stderr.String())
	}
	return lines
}
