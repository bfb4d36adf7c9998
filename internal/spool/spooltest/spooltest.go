// Package spooltest has helpers for tests of the spool's producers (the
// drop folder, the HTTP intake).
package spooltest

import (
	"testing"

	"github.com/dab-assets/dab/internal/spool"
)

// Entries returns the entries of spools sps by S3 key, failing the test on
// a key seen twice (a file claimed twice).
func Entries(t testing.TB, sps ...*spool.Spool) map[string]*spool.Manifest {
	t.Helper()
	out := map[string]*spool.Manifest{}
	for _, sp := range sps {
		list, err := sp.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			if prev, dup := out[m.Key()]; dup {
				t.Fatalf("%s claimed twice (entries %s and %s)", m.Key(), prev.ID, m.ID)
			}
			out[m.Key()] = m
		}
	}
	return out
}
