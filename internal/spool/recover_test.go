package spool

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

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

	got := map[string]RecoverAction{}
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

// TestRecoverPartialOriginNote: a claimer killed while writing its origin
// note (written in place, before the file moves) leaves a note that does
// not parse and no data: the file never left, and the folder goes.
func TestRecoverPartialOriginNote(t *testing.T) {
	s := open(t)
	m, _ := s.newManifest(Input{Type: "generic", Path: "a.bin", Source: "watcher"})
	tmp, unlock, err := s.newIncoming(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if err := os.WriteFile(filepath.Join(tmp, originFile), []byte(`{"source": "/drop/gen`), 0o640); err != nil {
		t.Fatal(err)
	}
	got := s.Recover()
	if len(got) != 1 || got[0].Action != RecoverRemoved || got[0].Err != nil {
		t.Fatalf("Recover = %+v, want the folder removed", got)
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("incoming folder still there: %v", err)
	}
}
