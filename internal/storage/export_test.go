package storage

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// WriteTestFile makes a file of n random bytes and returns it open, with its
// hex SHA-256.
func WriteTestFile(t *testing.T, n int) (*os.File, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	s := sha256.Sum256(b)
	return f, hex.EncodeToString(s[:])
}

// DirectPutInMemoryMax is directPutInMemoryMax, for the tests of the
// storage_test package.
const DirectPutInMemoryMax = directPutInMemoryMax
