package stream

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// maxNameBytes is Postgres's identifier limit (NAMEDATALEN - 1): a longer
// name is truncated by the server and would then name another object.
const maxNameBytes = 63

// CheckSlotName checks a replication slot name by Postgres's own rule
// (ReplicationSlotValidateName): 1 to 63 characters from a-z, 0-9 and _.
// The slot name appears unquoted in START_REPLICATION and
// CREATE_REPLICATION_SLOT, so anything else would fail there on every
// reconnect, or worse.
func CheckSlotName(name string) error {
	if name == "" || len(name) > maxNameBytes {
		return fmt.Errorf("%w: slot name %q has %d characters; a replication slot name is 1 to 63 characters from a-z, 0-9 and _",
			ErrConfig, name, len(name))
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return fmt.Errorf("%w: slot name %q: a replication slot name is 1 to 63 characters from a-z, 0-9 and _", ErrConfig, name)
		}
	}
	return nil
}

// CheckPublicationName checks a publication name: any Postgres identifier
// (it is always quoted) of 1 to 63 bytes of printable UTF-8.
func CheckPublicationName(name string) error {
	if name == "" || len(name) > maxNameBytes {
		return fmt.Errorf("%w: publication name %q is %d bytes; a publication name is 1 to 63 bytes of printable text",
			ErrConfig, name, len(name))
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: publication name %q is not UTF-8; a publication name is 1 to 63 bytes of printable text", ErrConfig, name)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: publication name %q holds a non-printable character; a publication name is 1 to 63 bytes of printable text",
				ErrConfig, name)
		}
	}
	return nil
}
