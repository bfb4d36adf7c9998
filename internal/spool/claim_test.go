package spool

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// dropFile writes a file and returns its state as a watcher would see it.
func dropFile(t *testing.T, path, content string) FileState {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
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

// crashAfterRename builds what a claimer killed right after its rename
// leaves: an incoming folder with the origin note and the data.
func crashAfterRename(t *testing.T, s *Spool, src string, claimName bool) string {
	t.Helper()
	m, _ := s.newManifest(Input{Type: "generic", Path: filepath.Base(src), Source: "watcher"})
	tmp, unlock, err := s.newIncoming(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock() // the crashed process's lock is gone
	o := origin{Source: src}
	o.Input.Type, o.Input.Path, o.Input.Source = "generic", filepath.Base(src), "watcher"
	if claimName {
		o.Claim = filepath.Join(filepath.Dir(src), ".dab-claim-"+m.ID)
		if err := os.Rename(src, o.Claim); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(tmp, dataFile), []byte("partial"), 0o640)
	} else if err := os.Rename(src, filepath.Join(tmp, dataFile)); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(o)
	os.WriteFile(filepath.Join(tmp, originFile), b, 0o640)
	return m.ID
}

func TestRecover(t *testing.T) {
	t.Parallel()
	s := open(t)
	dir := t.TempDir()
	a := filepath.Join(dir, "a.txt")
	dropFile(t, a, "A")
	crashAfterRename(t, s, a, false)
	b := filepath.Join(dir, "b.txt")
	dropFile(t, b, "B")
	crashAfterRename(t, s, b, true) // crossed filesystems, copy cut short
	c := filepath.Join(dir, "c.txt")
	dropFile(t, c, "C")
	crashAfterRename(t, s, c, false)
	dropFile(t, c, "a new C") // a new file took the name meanwhile
	// A claim killed while committing: manifest written, folder not yet renamed.
	d := filepath.Join(dir, "d.txt")
	dropFile(t, d, "D")
	dID := crashAfterRename(t, s, d, false)
	os.WriteFile(filepath.Join(s.Dir(), incomingDir, dID, manifestFile), []byte(`{"id":"`+dID+`"}`), 0o640)
	// A stream that never finished.
	tmp, unlock, _ := s.newIncoming(NewID())
	os.WriteFile(filepath.Join(tmp, dataFile), []byte("half"), 0o640)
	unlock()
	// A claim in progress in a live process: left alone.
	live, unlockLive, _ := s.newIncoming(NewID())
	defer unlockLive()

	got := map[string]string{}
	for _, r := range s.Recover() {
		if r.Err != nil {
			t.Fatalf("recover %s: %v", r.ID, r.Err)
		}
		got[filepath.Base(r.Path)] = r.Action
	}
	for name, want := range map[string]string{"a.txt": "A", "b.txt": "B", "c.txt": "a new C", "d.txt": "D"} {
		if data, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(data) != want {
			t.Errorf("%s = %q, %v; want %q", name, data, err, want)
		}
	}
	returned, _ := filepath.Glob(filepath.Join(dir, "c.txt.dab-returned-*"))
	if len(returned) != 1 {
		t.Fatalf("the claimed c.txt was not kept beside the new one: %v (actions %v)", returned, got)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("unfinished stream not removed")
	}
	if _, err := os.Stat(live); err != nil {
		t.Fatal("a live claim was disturbed")
	}
}

func TestMoveOutAndFailOut(t *testing.T) {
	t.Parallel()
	s := open(t)
	root := t.TempDir()
	for i := range 2 {
		m, err := s.Put(strings.NewReader("x"), Input{Type: "cyoa", Path: "forest/NODE_a.png"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.FailOut(m.ID, root, Failure{Code: "Conflict", Message: "why"})
		if err != nil {
			t.Fatal(err)
		}
		want := filepath.Join(root, "cyoa", "forest", "NODE_a.png")
		if i == 1 {
			want += ".1"
		}
		if got != want {
			t.Fatalf("moved to %s, want %s", got, want)
		}
		note, err := os.ReadFile(got + ".error.json")
		if err != nil || !strings.Contains(string(note), `"code": "Conflict"`) || !strings.Contains(string(note), "drop folder") {
			t.Fatalf("error note %s, %v", note, err)
		}
		if _, err := s.Get(m.ID); !errors.Is(err, ErrNotFound) {
			t.Fatal("entry kept after FailOut")
		}
	}
}
