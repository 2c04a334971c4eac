// Command example is a minimal ledgerd consumer: it registers, subscribes
// one shape, prints every change as a line of JSON and acks it.
//
//	go run ./client/example -url http://127.0.0.1:7070 -token-file /etc/ledgerd/token -id printer -table public.orders -filter tenant=a,b
//
// The token is found as inspect and ledgerd find it: -token-file (or
// LEDGERD_TOKEN_FILE), else -token (or LEDGERD_TOKEN).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ledgerd/ledgerd/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(runMain(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// runMain parses args and runs the consumer; it returns the exit status.
func runMain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("example", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:7070", "ledgerd API: http://host:port or unix:/path")
	tokenFile := fs.String("token-file", getenv("LEDGERD_TOKEN_FILE"), "file holding the bearer token, if ledgerd runs with -token-file (or set LEDGERD_TOKEN_FILE)")
	token := fs.String("token", getenv("LEDGERD_TOKEN"), "bearer token itself (or set LEDGERD_TOKEN); -token-file is preferred: a flag shows in ps")
	id := fs.String("id", "example", "consumer id")
	shape := fs.String("shape", "", "shape id (default: <id>-<table>)")
	table := fs.String("table", "", "table to follow, schema.table (required)")
	filter := fs.String("filter", "", "filter as column=v1,v2;column2=v3")
	ttl := fs.Duration("ttl", 10*time.Second, "lease TTL")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *table == "" {
		fmt.Fprintln(stderr, "example: -table is required")
		return 2
	}
	if *shape == "" {
		*shape = *id + "-" + *table
	}
	tok := *token
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "example: reading -token-file: %v; point it at the file of ledgerd's -token-file\n", err)
			return 2
		}
		if tok = strings.TrimSpace(string(b)); tok == "" {
			fmt.Fprintf(stderr, "example: -token-file %s is empty: point it at the file of ledgerd's -token-file\n", *tokenFile)
			return 2
		}
	}
	if err := run(ctx, *url, tok, *id, *shape, *table, parseFilter(*filter), *ttl, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "example:", err)
		return 1
	}
	return 0
}

func parseFilter(s string) map[string][]string {
	if s == "" {
		return nil
	}
	f := map[string][]string{}
	for _, part := range strings.Split(s, ";") {
		col, vals, _ := strings.Cut(part, "=")
		f[strings.TrimSpace(col)] = strings.Split(vals, ",")
	}
	return f
}

func run(ctx context.Context, url, token, id, shape, table string, filter map[string][]string, ttl time.Duration, stdout, stderr io.Writer) error {
	c, err := client.New(client.Config{URL: url, Token: token})
	if err != nil {
		return err
	}
	k, err := c.Register(ctx, client.ConsumerConfig{ID: id, TTL: ttl})
	if err != nil {
		return err
	}
	sh, err := k.PutShape(ctx, shape, table, filter)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "example: consumer %s, shape %s generation %d from %s\n", id, shape, sh.Generation, sh.StartLSN)
	for _, w := range sh.Warnings {
		fmt.Fprintf(stderr, "example: warning: %s\n", w)
	}
	enc := json.NewEncoder(stdout)
	err = k.Run(ctx, func(ctx context.Context, txn *client.Txn) error {
		for _, ch := range txn.Changes {
			if err := enc.Encode(map[string]any{"lsn": txn.LSN.String(), "op": ch.Op, "table": ch.Table, "new": ch.New, "old": ch.Old}); err != nil {
				return err
			}
		}
		return nil
	}, client.RunOptions{
		OnEvicted: func(shape, reason string) { fmt.Fprintf(stderr, "example: shape %s evicted (%s)\n", shape, reason) },
		OnError:   func(err error) { fmt.Fprintln(stderr, "example:", err) },
	})
	if err != nil {
		return err
	}
	// Leaving for good: release the lease so the shape stops holding WAL.
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return k.Release(rctx)
}
