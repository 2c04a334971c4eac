package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ledgerd/ledgerd/api/wire"
)

// ledgerd_evictions_total counts every eviction by reason, whoever evicted
// (an operator, a consumer's release), with a zero for each reason before
// its first eviction so a rate over it is defined from the start.
func TestEvictionsTotalByReason(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	status, body := get(t, e.srv.URL+"/metrics", token)
	for _, want := range []string{`ledgerd_evictions_total{reason="manual"} 0`, `ledgerd_evictions_total{reason="stalled"} 0`,
		`ledgerd_evictions_total{reason="relation_changed"} 0`} {
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("before any eviction: want %s in\n%s", want, body)
		}
	}
	k1, k2 := e.register("c1"), e.register("c2")
	if _, err := k1.PutShape(ctx, "s1", "public.orders", nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"s2", "s3"} {
		if _, err := k2.PutShape(ctx, id, "public.orders", nil); err != nil {
			t.Fatal(err)
		}
	}
	var ev wire.EvictResponse
	if _, err := e.c.Do(ctx, "POST", "/v1/shapes/s1/evict", "", wire.EvictRequest{}, &ev); err != nil {
		t.Fatal(err)
	}
	if err := k2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	_, body = get(t, e.srv.URL+"/metrics", token)
	for _, want := range []string{`ledgerd_evictions_total{reason="manual"} 1`, `ledgerd_evictions_total{reason="released"} 2`,
		`ledgerd_evictions_total{reason="stalled"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("after the evictions: want %s in\n%s", want, body)
		}
	}
}
