package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestAckerAcksTheRestOfARefusedBatch: after a daemon restart, an ack batch
// may mix a position the new daemon never delivered (it will send it again)
// with acks of transactions it did deliver. The daemon refuses the whole
// batch; the acker must still ack the others, or a shape with no later
// transaction stays pending and pins the slot.
func TestAckerAcksTheRestOfARefusedBatch(t *testing.T) {
	var mu sync.Mutex
	applied := map[string]string{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/consumers/c/ack", func(w http.ResponseWriter, r *http.Request) {
		var req wire.AckRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("decoding ack: %v", err)
		}
		if _, ok := req.Acks["before-restart"]; ok {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"` + wire.CodeAckBeyondDelivered + `","message":"not delivered yet"}`))
			return
		}
		mu.Lock()
		for s, l := range req.Acks {
			applied[s] = l
		}
		mu.Unlock()
		_, _ = w.Write([]byte(`{"flush_lsn":"0/100","gone":{}}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c, err := New(Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	a := &acker{k: &Consumer{c: c, id: "c", lease: "L"}, wake: make(chan struct{}, 1),
		pending: map[string]ledger.LSN{"before-restart": 0x500, "after-restart": 0x100},
		report:  func(error) {}, fatal: func(err error) { t.Errorf("fatal: %v", err) }}
	a.flush(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if applied["after-restart"] != "0/100" || len(applied) != 1 {
		t.Errorf("acks applied %v, want after-restart at 0/100 only", applied)
	}
	if len(a.pending) != 0 {
		t.Errorf("acks left pending %v, want none", a.pending)
	}
}
