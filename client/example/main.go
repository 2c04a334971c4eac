// Command example is a minimal ledgerd consumer: it registers, subscribes
// one shape, prints every change as a line of JSON and acks it.
//
//	go run ./client/example -url http://127.0.0.1:7070 -id printer -table public.orders -filter tenant=a,b
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ledgerd/ledgerd/client"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:7070", "ledgerd API: http://host:port or unix:/path")
	token := flag.String("token", os.Getenv("LEDGERD_TOKEN"), "bearer token, if ledgerd runs with -token-file")
	id := flag.String("id", "example", "consumer id")
	shape := flag.String("shape", "", "shape id (default: <id>-<table>)")
	table := flag.String("table", "", "table to follow, schema.table (required)")
	filter := flag.String("filter", "", "filter as column=v1,v2;column2=v3")
	ttl := flag.Duration("ttl", 10*time.Second, "lease TTL")
	flag.Parse()
	if *table == "" {
		fmt.Fprintln(os.Stderr, "example: -table is required")
		os.Exit(2)
	}
	if *shape == "" {
		*shape = *id + "-" + *table
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *token, *id, *shape, *table, parseFilter(*filter), *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
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

func run(ctx context.Context, url, token, id, shape, table string, filter map[string][]string, ttl time.Duration) error {
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
	fmt.Fprintf(os.Stderr, "example: consumer %s, shape %s generation %d from %s\n", id, shape, sh.Generation, sh.StartLSN)
	for _, w := range sh.Warnings {
		fmt.Fprintf(os.Stderr, "example: warning: %s\n", w)
	}
	enc := json.NewEncoder(os.Stdout)
	err = k.Run(ctx, func(ctx context.Context, txn *client.Txn) error {
		for _, ch := range txn.Changes {
			if err := enc.Encode(map[string]any{"lsn": txn.LSN.String(), "op": ch.Op, "table": ch.Table, "new": ch.New, "old": ch.Old}); err != nil {
				return err
			}
		}
		return nil
	}, client.RunOptions{
		OnEvicted: func(shape, reason string) { fmt.Fprintf(os.Stderr, "example: shape %s evicted (%s)\n", shape, reason) },
		OnError:   func(err error) { fmt.Fprintln(os.Stderr, "example:", err) },
	})
	if err != nil {
		return err
	}
	// Leaving for good: release the lease so the shape stops holding WAL.
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return k.Release(rctx)
}
