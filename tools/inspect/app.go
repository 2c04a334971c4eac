package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
)

// App holds the global flags and the environment every command shares.
type App struct {
	env   Env
	g     Globals
	dbSet bool
}

// Env is what inspect needs from the outside world; tests inject a buffer and
// a fixed clock so that output is deterministic.
type Env struct {
	Stdout, Stderr io.Writer
	Now            func() time.Time
	Getenv         func(string) string
	// HTTP is the client for -url; nil means a client with a 30s timeout.
	HTTP *http.Client
}

// Globals are the flags before the command.
type Globals struct {
	DB        string
	URL       string
	PG        string
	TokenFile string
	JSON      bool
	Policy    Policy
	Version   bool
}

// command is one subcommand: it parses its own flags and runs.
type command interface {
	Run(ctx context.Context, args []string) error
}

func (a *App) checkGlobals() error {
	if a.dbSet && a.g.URL != "" {
		return fmt.Errorf("-db and -url both given: read the file with -db or ask the daemon with -url, not both")
	}
	if a.g.DB == "" && a.g.URL == "" {
		return fmt.Errorf("-db is empty: point it at ledgerd's ledger file")
	}
	for name, d := range map[string]time.Duration{"reconcile-interval": a.g.Policy.ReconcileInterval,
		"stall-grace": a.g.Policy.StallGrace, "challenge-timeout": a.g.Policy.ChallengeTimeout} {
		if d <= 0 {
			return fmt.Errorf("-%s must be a positive duration like 1s", name)
		}
	}
	return nil
}

// commandFlags parses a command's own flags: -json (also accepted after the
// command) and, for commands that take one, a single positional argument.
func (a *App) commandFlags(name string, args []string, wantArg string, more ...func(*flag.FlagSet)) (string, error) {
	fs := flag.NewFlagSet("inspect "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&a.g.JSON, "json", a.g.JSON, "print JSON instead of text")
	for _, f := range more {
		f(fs)
	}
	// Allow "shape ID -json" as well as "shape -json ID".
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return "", usageErrorf("usage: inspect [global flags] %s [-json]%s", name, argHint(wantArg))
			}
			return "", usageErrorf("%v; usage: inspect [global flags] %s [-json]%s", err, name, argHint(wantArg))
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case wantArg == "" && len(pos) > 0:
		return "", usageErrorf("%s takes no argument (got %s)", name, strings.Join(pos, " "))
	case wantArg != "" && len(pos) != 1:
		return "", usageErrorf("usage: inspect [global flags] %s [-json] %s", name, wantArg)
	case wantArg != "":
		return pos[0], nil
	}
	return "", nil
}

func argHint(a string) string {
	if a == "" {
		return ""
	}
	return " " + a
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
