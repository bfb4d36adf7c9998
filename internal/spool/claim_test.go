package spool

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// dropFile writes a file and returns its state as a watcher would see it,
// once no process has it open for writing (waitNoWriter).
func dropFile(t *testing.T, path, content string) FileState {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	waitNoWriter(t, path)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return FileState{Size: st.Size(), ModTime: st.ModTime()}
}

func TestClaim(t *testing.T) {
	t.Parallel()
	s := open(t)
	src := filepath.Join(t.TempDir(), "cyoa", "NODE_b.png")
	seen := dropFile(t, src, "png")
	m, err := s.Claim(src, Input{Type: "cyoa", Path: "NODE_b.png", Source: "watcher"}, seen)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("source still there after the claim")
	}
	if m.Size != 3 || m.Source != "watcher" {
		t.Fatalf("manifest %+v", m)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), m.ID, originFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("origin note left in a committed entry")
	}
	// Gone.
	if _, err := s.Claim(src, Input{Type: "cyoa", Path: "NODE_b.png"}, seen); !errors.Is(err, ErrGone) {
		t.Fatalf("claim of a gone file = %v", err)
	}
}

func TestClaimPutsBackAChangedFile(t *testing.T) {
	t.Parallel()
	s := open(t)
	src := filepath.Join(t.TempDir(), "a.txt")
	seen := dropFile(t, src, "short")
	dropFile(t, src, "longer now") // written to again after the watcher looked
	if _, err := s.Claim(src, Input{Type: "generic", Path: "a.txt"}, seen); !errors.Is(err, ErrChanging) {
		t.Fatalf("err = %v, want ErrChanging", err)
	}
	if b, err := os.ReadFile(src); err != nil || string(b) != "longer now" {
		t.Fatalf("file not put back: %q, %v", b, err)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Fatal("entry committed for a changing file")
	}
}

func TestTwoClaimersOneWinner(t *testing.T) {
	t.Parallel()
	s1, s2 := open(t), open(t)
	dir := t.TempDir()
	for i := range 50 {
		name := filepath.Join(dir, "f"+string(rune('a'+i%26))+strings.Repeat("x", i))
		seen := dropFile(t, name, "data")
		var wg sync.WaitGroup
		wins := make(chan string, 2)
		for _, sp := range []*Spool{s1, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for try := 0; ; try++ {
					m, err := sp.Claim(name, Input{Type: "generic", Path: "f"}, seen)
					switch {
					case err == nil:
						wins <- m.ID
					case errors.Is(err, ErrInUse) && try < 100:
						// A child process that another test forks holds a copy of
						// every descriptor until it execs, dropFile's writer too:
						// as the watcher does, look again a little later.
						time.Sleep(10 * time.Millisecond)
						continue
					case !errors.Is(err, ErrGone):
						t.Errorf("claim: %v", err)
					}
					return
				}
			}()
		}
		wg.Wait()
		close(wins)
		if n := len(wins); n != 1 {
			t.Fatalf("file %d claimed %d times", i, n)
		}
	}
}

// TestClaimLargeFiles: files from writebackAhead up, whose writeback the
// claim starts before hashing, are claimed alone and in a batch with their
// size and SHA-256, and one that changed after the watcher's look is still
// put back.
func TestClaimLargeFiles(t *testing.T) {
	t.Parallel()
	s := open(t)
	dir := t.TempDir()
	content := func(seed byte) string {
		b := make([]byte, writebackAhead+12345)
		for i := range b {
			b[i] = seed + byte(i%251)
		}
		return string(b)
	}
	sum := func(c string) string {
		h := sha256.Sum256([]byte(c))
		return hex.EncodeToString(h[:])
	}
	alone, a, b := content(1), content(2), content(3)
	seen := dropFile(t, filepath.Join(dir, "alone.bin"), alone)
	m, err := s.Claim(filepath.Join(dir, "alone.bin"), Input{Type: "generic", Path: "alone.bin"}, seen)
	if err != nil || m.Size != int64(len(alone)) || m.SHA256 != sum(alone) {
		t.Fatalf("claim alone: %+v, %v", m, err)
	}
	reqs := []ClaimRequest{
		{Src: filepath.Join(dir, "a.bin"), In: Input{Type: "generic", Path: "a.bin"}, Seen: dropFile(t, filepath.Join(dir, "a.bin"), a)},
		{Src: filepath.Join(dir, "b.bin"), In: Input{Type: "generic", Path: "b.bin"}, Seen: dropFile(t, filepath.Join(dir, "b.bin"), b)},
		{Src: filepath.Join(dir, "changed.bin"), In: Input{Type: "generic", Path: "changed.bin"}, Seen: dropFile(t, filepath.Join(dir, "changed.bin"), a)},
	}
	dropFile(t, filepath.Join(dir, "changed.bin"), a+"more") // written to after the look
	res := s.ClaimBatch(reqs)
	for i, want := range []string{a, b} {
		if r := res[i]; r.Err != nil || r.M.Size != int64(len(want)) || r.M.SHA256 != sum(want) {
			t.Errorf("batch claim %d: %+v, %v", i, r.M, r.Err)
		}
	}
	if !errors.Is(res[2].Err, ErrChanging) {
		t.Errorf("changed file: %v, want ErrChanging", res[2].Err)
	}
	if st, err := os.Stat(filepath.Join(dir, "changed.bin")); err != nil || st.Size() != int64(len(a)+4) {
		t.Errorf("changed file not put back whole: %v", err)
	}
}

// waitNoWriter waits until no process has path open for writing. A file
// this test process just wrote and closed can still be open for writing
// for a moment in a child another test is starting (forked, not yet
// exec'ed: it holds a copy of every descriptor), and a claim would
// rightly refuse it (ErrInUse), as the watcher's would.
func waitNoWriter(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for openForWriting(path) {
		if time.Now().After(deadline) {
			t.Fatalf("%s stays open for writing", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
