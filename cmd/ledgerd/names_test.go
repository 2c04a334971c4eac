package main

import (
	"io"
	"strings"
	"testing"
)

// TestConfigRejectsUnsafeNames: slot and publication names are checked as
// Postgres checks them when the flags are parsed, with the rule in the
// error, instead of reaching replication commands and failing there on
// every retry.
func TestConfigRejectsUnsafeNames(t *testing.T) {
	for _, tc := range []struct {
		flag, value, want string
	}{
		{"-slot", "a'b", "a-z, 0-9 and _"},
		{"-slot", "Ledgerd", "a-z, 0-9 and _"},
		{"-slot", "a b", "a-z, 0-9 and _"},
		{"-slot", "x; DROP TABLE t", "a-z, 0-9 and _"},
		{"-slot", strings.Repeat("s", 64), "1 to 63"},
		{"-publication", strings.Repeat("p", 64), "1 to 63 bytes"},
		{"-publication", "a\x00b", "printable"},
	} {
		_, err := parseConfig([]string{"-pg-url", "x", tc.flag, tc.value}, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.flag) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: error %v, want one naming %s and the rule (%q)", tc.flag, tc.value, err, tc.flag, tc.want)
		}
	}
	for _, args := range [][]string{{"-slot", "ledgerd_2", "-publication", "Orders-Pub"}, {"-slot", strings.Repeat("s", 63)}} {
		if _, err := parseConfig(append([]string{"-pg-url", "x"}, args...), func(string) string { return "" }, io.Discard); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}
