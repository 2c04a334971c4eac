package main

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzParseSize: a size flag (-outbox-bytes, -fragment-bytes) parses to a
// non-negative byte count that fits the daemon's arithmetic, or to an error
// naming the expected form; never a panic, never a wrapped-around value.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"64MiB", "4MiB", "1GB", "512k", "4096", "0", " 2 mb ", "1TiB", "8EiB",
		"4611686018427387904", "4611686018427387905", "9223372036854775807", "9223372036854775808",
		"-1", "-1MiB", "+5", "1.5MiB", "MiB", "", "4096B", "4194304k", "4194305TiB", "0x10", "1_000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("error %q does not name the value", err)
			}
			return
		}
		if n < 0 || n > 1<<62 {
			t.Fatalf("parseSize(%q) = %d, out of range", s, n)
		}
		if again, err := parseSize(strconv.FormatInt(n, 10)); err != nil || again != n {
			t.Fatalf("parseSize(%q) = %d, but its plain form parses to %d, %v", s, n, again, err)
		}
		var b byteSize
		if err := b.Set(s); err != nil || int64(b) != n {
			t.Fatalf("byteSize.Set(%q) = %d, %v; parseSize said %d", s, b, err, n)
		}
	})
}
