package ledger

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a Postgres log sequence number: a byte position in the WAL.
//
// It is defined here rather than borrowed from a Postgres driver so that the
// ledger stays usable without one. Its text form is Postgres's own, two
// hexadecimal halves separated by a slash ("0/16B3748").
type LSN uint64

// String returns the Postgres text form of the position, e.g. "0/16B3748".
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l))
}

// ParseLSN parses the Postgres text form of a position ("16/B374D848").
// It returns an error naming the expected form for anything else.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("malformed LSN %q: want two hexadecimal halves like \"0/16B3748\"", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("malformed LSN %q: want two hexadecimal halves like \"0/16B3748\"", s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("malformed LSN %q: want two hexadecimal halves like \"0/16B3748\"", s)
	}
	return LSN(h<<32 | l), nil
}

// MarshalText encodes the position in its Postgres text form, so LSNs read
// the same in JSON, logs and psql.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText decodes the Postgres text form of a position.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
