package harness

import (
	"crypto/sha256"
	"encoding/hex"
)

// SHA256Hex is the SHA-256 of b in lower-case hex, as dab records it.
func SHA256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
