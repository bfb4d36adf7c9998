package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// whereAre counts, for every content of want, the places holding it: the
// drop folder (any name), entries' data, and data files left in .incoming.
func whereAre(t *testing.T, s *Spool, drop string, want map[string]string) map[string]int {
	t.Helper()
	byContent := map[string]string{}
	for name, c := range want {
		byContent[c] = name
	}
	got := map[string]int{}
	look := func(p string) {
		b, err := os.ReadFile(p)
		if err != nil {
			return
		}
		if name, ok := byContent[string(b)]; ok {
			got[name]++
		}
	}
	filepath.WalkDir(drop, func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			look(p)
		}
		return nil
	})
	ids, _ := s.IDs()
	for _, id := range ids {
		look(s.DataPath(id))
	}
	des, _ := os.ReadDir(filepath.Join(s.Dir(), incomingDir))
	for _, de := range des {
		if de.IsDir() {
			look(filepath.Join(s.Dir(), incomingDir, de.Name(), dataFile))
		}
	}
	return got
}

func checkNoneLost(t *testing.T, s *Spool, drop string, want map[string]string) {
	t.Helper()
	got := whereAre(t, s, drop, want)
	for name := range want {
		if got[name] == 0 {
			t.Errorf("%s is lost: neither in the drop folder, nor in an entry, nor in .incoming", name)
		}
	}
}

// TestClaimPutBackThatFailsLosesNothing: a claim (alone or in a batch)
// that must put a file back (it changed after the watcher looked) and
// cannot (the user removed its folder, now empty, meanwhile) leaves the
// file in .incoming/<id>/data with its origin note, from which the next
// Recover commits it as an entry: the user's file is never deleted.
func TestClaimPutBackThatFailsLosesNothing(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			s := open(t)
			drop := t.TempDir()
			sub := filepath.Join(drop, "sub")
			a := filepath.Join(sub, "a.bin")
			b := filepath.Join(drop, "b.bin")
			want := map[string]string{"a.bin": "the bytes of a", "b.bin": "the bytes of b"}
			seenA := dropFile(t, a, want["a.bin"])
			seenB := dropFile(t, b, want["b.bin"])
			seenA.Size++ // a changed after the watcher looked: it must be put back
			// The user removes sub once it is empty (the file was taken).
			rmSub := func(step string) {
				if step == "batch.renamed" {
					os.Remove(sub)
				}
			}
			in := func(p string) Input { return Input{Type: "generic", Path: filepath.Base(p), Source: "watcher"} }
			if batch {
				s.crashPoint = rmSub
				res := s.ClaimBatch([]ClaimRequest{{Src: a, In: in(a), Seen: seenA}, {Src: b, In: in(b), Seen: seenB}})
				s.crashPoint = nil
				if res[0].Err == nil {
					t.Fatal("a was taken although it changed")
				}
				t.Logf("ClaimBatch: %v", res[0].Err)
			} else {
				// Claim, the control: same failure, the file survives Recover.
				data := ""
				s.openForWriting = func(p string) bool {
					if strings.HasSuffix(p, "/"+dataFile) && data == "" {
						data = p
						os.Remove(sub)
					}
					return openForWriting(p)
				}
				_, err := s.Claim(a, in(a), seenA)
				s.openForWriting = openForWriting
				if err == nil {
					t.Fatal("a was taken although it changed")
				}
				t.Logf("Claim: %v", err)
			}
			if got := whereAre(t, s, drop, want); got["a.bin"] != 1 {
				t.Fatalf("after the claim a.bin is in %d places", got["a.bin"])
			}
			// The watcher restarts.
			restarted, err := Open(s.Dir())
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range restarted.Recover() {
				t.Logf("Recover: %+v", r)
			}
			checkNoneLost(t, restarted, drop, want)
		})
	}
}
