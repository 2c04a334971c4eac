package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/api"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestConfigLimits: each limit has a flag and an environment variable, the
// defaults are the API's and the ledger's, and a limit of 0 or below is
// refused naming the flag.
func TestConfigLimits(t *testing.T) {
	cfg, err := parseConfig([]string{"-pg-url", "x"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := api.Limits{MaxFilterColumns: api.DefaultMaxFilterColumns, MaxFilterValues: api.DefaultMaxFilterValues,
		MaxValueBytes: api.DefaultMaxValueBytes, MaxShapesPerConsumer: api.DefaultMaxShapesPerConsumer, MaxConsumers: api.DefaultMaxConsumers}
	if got := cfg.limits(); got != want {
		t.Errorf("default limits %+v, want %+v", got, want)
	}
	if cfg.ConsumerRetention != ledger.DefaultConsumerRetention {
		t.Errorf("default -consumer-retention %v, want %v", cfg.ConsumerRetention, ledger.DefaultConsumerRetention)
	}

	env := map[string]string{
		"LEDGERD_MAX_FILTER_COLUMNS":      "8",
		"LEDGERD_MAX_FILTER_VALUES":       "100",
		"LEDGERD_MAX_VALUE_BYTES":         "2KiB",
		"LEDGERD_MAX_SHAPES_PER_CONSUMER": "50",
		"LEDGERD_MAX_CONSUMERS":           "7",
		"LEDGERD_CONSUMER_RETENTION":      "48h",
	}
	cfg, err = parseConfig([]string{"-pg-url", "x", "-max-consumers", "9"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want = api.Limits{MaxFilterColumns: 8, MaxFilterValues: 100, MaxValueBytes: 2048, MaxShapesPerConsumer: 50, MaxConsumers: 9}
	if got := cfg.limits(); got != want || cfg.ConsumerRetention != 48*time.Hour {
		t.Errorf("limits %+v retention %v, want %+v and 48h", got, cfg.ConsumerRetention, want)
	}

	for _, flag := range []string{"-max-filter-columns", "-max-filter-values", "-max-value-bytes", "-max-shapes-per-consumer", "-max-consumers", "-consumer-retention"} {
		v := "0"
		if flag == "-consumer-retention" {
			v = "0s"
		}
		_, err := parseConfig([]string{"-pg-url", "x", flag, v}, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s %s: error %v, want one naming the flag", flag, v, err)
		}
	}
}
