package ledger

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
)

// A lease token is a bearer secret: whoever holds it may heartbeat, stream
// and ack for its consumer, and an ack moves the flush the slot confirms
// (I1). The ledger keeps only its SHA-256, in memory and in the file, so the
// file, a snapshot of it, the journal and every view carry nothing that
// would let a reader act as a consumer. The token itself leaves the ledger
// once, in what Register returns. Tokens are 128 random bits, so a plain
// hash (no salt, no stretching) is enough.

// leaseHash is the stored form of a lease token.
type leaseHash [sha256.Size]byte

func hashLease(token string) leaseHash { return sha256.Sum256([]byte(token)) }

// matches reports, in constant time, whether token is the lease h was made
// from. A consumer without a lease matches nothing.
func (h leaseHash) matches(token string) bool {
	if h == (leaseHash{}) {
		return false
	}
	got := hashLease(token)
	return subtle.ConstantTimeCompare(got[:], h[:]) == 1
}

func (h leaseHash) String() string {
	if h == (leaseHash{}) {
		return ""
	}
	return hex.EncodeToString(h[:])
}

// storedLease turns a consumer record's lease fields into the hash. A record
// written before leases were hashed holds the token in the clear; it is
// hashed here, and clear reports it so that Open rewrites the record.
func storedLease(sum, token string) (h leaseHash, clear bool, err error) {
	if sum != "" {
		b, err := hex.DecodeString(sum)
		if err != nil || len(b) != len(h) {
			return h, false, fmt.Errorf("lease_sha256 %q is not a hex SHA-256", sum)
		}
		copy(h[:], b)
		return h, false, nil
	}
	if token != "" {
		return hashLease(token), true, nil
	}
	return h, false, nil
}
