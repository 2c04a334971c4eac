package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestConfigEnvAndFlags(t *testing.T) {
	env := map[string]string{
		"LEDGERD_PG_URL":                "postgres://env/db",
		"LEDGERD_SLOT":                  "from_env",
		"LEDGERD_TTL":                   "20s",
		"LEDGERD_CREATE_SLOT":           "true",
		"LEDGERD_OUTBOX_BYTES":          "1MiB",
		"LEDGERD_SLOW_CONSUMER_TIMEOUT": "5s",
		"LEDGERD_HEARTBEAT_INTERVAL":    "0",
	}
	cfg, err := parseConfig([]string{"-slot", "from_flag", "-outbox-bytes", "2MB"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PGURL != "postgres://env/db" || !cfg.CreateSlot || cfg.TTL != 20*time.Second || cfg.SlowConsumerTimeout != 5*time.Second {
		t.Errorf("environment not applied: %+v", cfg)
	}
	if cfg.Slot != "from_flag" || cfg.OutboxBytes != 2_000_000 {
		t.Errorf("the command line must win over the environment: slot %q outbox %d", cfg.Slot, cfg.OutboxBytes)
	}
	if cfg.Publication != "ledgerd" || cfg.Listen != "127.0.0.1:7070" || cfg.DB != "ledgerd.db" || cfg.HeartbeatInterval != 0 {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestConfigErrorsNameTheFix(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "-pg-url (LEDGERD_PG_URL) is required"},
		{[]string{"-pg-url", "x"}, map[string]string{"LEDGERD_TTL": "ten"}, "LEDGERD_TTL"},
		{[]string{"-pg-url", "x", "-ttl", "0s"}, nil, "-ttl must be a positive duration"},
		{[]string{"-pg-url", "x", "-outbox-bytes", "lots"}, nil, "not a size"},
		{[]string{"-pg-url", "x", "-evict-max-fraction", "2"}, nil, "-evict-max-fraction must be between 0 and 1"},
		{[]string{"-pg-url", "x", "extra"}, nil, "takes only flags"},
		{[]string{"-pg-url", "x", "-replica-identity", "FULLL"}, nil, `-replica-identity must be "full"`},
		{[]string{"-pg-url", "x"}, map[string]string{"LEDGERD_REPLICA_IDENTITY": "default"}, `-replica-identity must be "full"`},
		{[]string{"-pg-url", "x", "-fragment-bytes", "100"}, nil, "-fragment-bytes must be at least 1KiB"},
	}
	for _, tc := range tests {
		_, err := parseConfig(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: error %v, want it to mention %q", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestConfigFragmentBytes(t *testing.T) {
	cfg, err := parseConfig([]string{"-pg-url", "x"}, func(k string) string {
		return map[string]string{"LEDGERD_FRAGMENT_BYTES": "512KiB"}[k]
	}, io.Discard)
	if err != nil || cfg.FragmentBytes != 512<<10 {
		t.Errorf("LEDGERD_FRAGMENT_BYTES=512KiB: %d %v", cfg.FragmentBytes, err)
	}
	cfg, err = parseConfig([]string{"-pg-url", "x"}, func(string) string { return "" }, io.Discard)
	if err != nil || cfg.FragmentBytes != 4<<20 {
		t.Errorf("default: %d %v, want 4MiB", cfg.FragmentBytes, err)
	}
}

func TestConfigReplicaIdentity(t *testing.T) {
	cfg, err := parseConfig([]string{"-pg-url", "x"}, func(k string) string {
		return map[string]string{"LEDGERD_REPLICA_IDENTITY": "full"}[k]
	}, io.Discard)
	if err != nil || cfg.ReplicaIdentity != "full" {
		t.Errorf("LEDGERD_REPLICA_IDENTITY=full: %q %v", cfg.ReplicaIdentity, err)
	}
	cfg, err = parseConfig([]string{"-pg-url", "x"}, func(string) string { return "" }, io.Discard)
	if err != nil || cfg.ReplicaIdentity != "" {
		t.Errorf("default: %q %v, want empty (leave tables alone)", cfg.ReplicaIdentity, err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "64MiB": 64 << 20, "64M": 64 << 20, "1GB": 1e9, "512k": 512 << 10, "0": 0} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5GB", "12parsecs"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

// TestConfigAdoptSlot: -adopt-slot is off unless asked for, on the command
// line or as LEDGERD_ADOPT_SLOT.
func TestConfigAdoptSlot(t *testing.T) {
	env := map[string]string{"LEDGERD_PG_URL": "postgres://env/db"}
	cfg, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil || cfg.AdoptSlot {
		t.Fatalf("default: adopt %v, err %v; want off", cfg.AdoptSlot, err)
	}
	env["LEDGERD_ADOPT_SLOT"] = "true"
	if cfg, err = parseConfig(nil, func(k string) string { return env[k] }, io.Discard); err != nil || !cfg.AdoptSlot {
		t.Fatalf("LEDGERD_ADOPT_SLOT=true: adopt %v, err %v", cfg.AdoptSlot, err)
	}
	if cfg, err = parseConfig([]string{"-adopt-slot=false"}, func(k string) string { return env[k] }, io.Discard); err != nil || cfg.AdoptSlot {
		t.Fatalf("-adopt-slot=false over the environment: adopt %v, err %v", cfg.AdoptSlot, err)
	}
}
