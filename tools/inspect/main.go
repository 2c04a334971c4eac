package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ledgerd/ledgerd/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Main(ctx, os.Args[1:], Env{Stdout: os.Stdout, Stderr: os.Stderr, Now: time.Now, Getenv: os.Getenv}))
}

// Exit statuses (docs/operations.md, "inspect").
const (
	exitOK      = 0
	exitProblem = 1 // verify found a violation
	exitCannot  = 2 // bad usage, unreadable file, unreachable daemon
)

var commandHelp = []struct{ name, help string }{
	{"status", "slot, safe vs confirmed flush, retained WAL, counts by state"},
	{"holders", "shapes pinning WAL, worst first, and what the reconciler will do"},
	{"why", "the root cause of retained WAL in one paragraph"},
	{"shape", "ID: a shape's detail and journal history"},
	{"consumer", "ID: a consumer's detail and journal history"},
	{"evictions", "tombstones with reasons and evidence"},
	{"verify", "bbolt check, ledger invariants, and with -pg the ledger against the slot (exit 1 on a violation)"},
	{"export", "the whole ledger as JSON"},
}

// Main runs inspect with args (without the program name) and returns the
// exit status.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.HTTP == nil {
		env.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	app := &App{env: env}
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	app.globalFlags(fs)
	fs.Usage = func() {} // printed below, to stdout for -h
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		app.usage(env.Stdout, fs)
		return exitOK
	}
	if err == nil && app.g.Version {
		fmt.Fprintf(env.Stdout, "inspect %s %s\n", version.String(), version.GoVersion())
		return exitOK
	}
	if err == nil {
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "db" {
				app.dbSet = true
			}
		})
		err = app.checkGlobals()
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "inspect: %v\n", err)
		fmt.Fprintln(env.Stderr, "run 'inspect -h' for usage")
		return exitCannot
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(env.Stderr, "inspect: no command given: name one of status, holders, why, shape ID, consumer ID, evictions, verify, export")
		app.usage(env.Stderr, fs)
		return exitCannot
	}
	cmd, ok := app.commands()[rest[0]]
	if !ok {
		fmt.Fprintf(env.Stderr, "inspect: unknown command %q: name one of status, holders, why, shape ID, consumer ID, evictions, verify, export\n", rest[0])
		return exitCannot
	}
	err = cmd.Run(ctx, rest[1:])
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errProblemsFound):
		return exitProblem
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	default:
		fmt.Fprintf(env.Stderr, "inspect %s: %v\n", rest[0], err)
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(env.Stderr, "run 'inspect -h' for usage")
		}
		return exitCannot
	}
}

func (a *App) commands() map[string]command {
	return map[string]command{
		"status":    &statusCommand{a},
		"holders":   &holdersCommand{a},
		"why":       &whyCommand{a},
		"shape":     &shapeCommand{a},
		"consumer":  &consumerCommand{a},
		"evictions": &evictionsCommand{a},
		"verify":    &verifyCommand{a},
		"export":    &exportCommand{a},
	}
}

func (a *App) globalFlags(fs *flag.FlagSet) {
	g := &a.g
	fs.StringVar(&g.DB, "db", "ledgerd.db", "ledger `file` to read (read-only; works while ledgerd is down)")
	fs.StringVar(&g.URL, "url", "", "ask a running ledgerd at this `URL` (http://127.0.0.1:7070 or unix:/path) instead of reading -db")
	fs.StringVar(&g.PG, "pg", "", "Postgres connection `string`: adds the live slot and server state")
	fs.StringVar(&g.TokenFile, "token-file", "", "`file` holding the daemon's bearer token for -url (or set LEDGERD_TOKEN_FILE, or the token in LEDGERD_TOKEN)")
	fs.BoolVar(&g.Version, "version", false, "print the build's version and exit")
	fs.BoolVar(&g.JSON, "json", false, "print JSON instead of text")
	fs.DurationVar(&g.Policy.ReconcileInterval, "reconcile-interval", DefaultReconcileInterval, "the daemon's -reconcile-interval, for predictions")
	fs.DurationVar(&g.Policy.StallGrace, "stall-grace", DefaultStallGrace, "the daemon's -stall-grace, for predictions")
	fs.Int64Var(&g.Policy.MaxShapeLagBytes, "max-shape-lag-bytes", 0, "the daemon's -max-shape-lag-bytes, for predictions (0 = off)")
	fs.DurationVar(&g.Policy.ChallengeTimeout, "challenge-timeout", DefaultChallengeTimeout, "the daemon's -challenge-timeout, for predictions")
}

func (a *App) usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: inspect [-db FILE | -url URL] [-pg URL] [-json] COMMAND [ARG]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commandHelp {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.help)
	}
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprintln(w, "\nexit status: 0 done, 1 a problem found (verify), 2 could not run")
}
