package spool

import (
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/harness"
)

// acrossFilesystems returns a spool on the tmpfs /dev/shm and a drop folder
// on disk, so that a claim cannot rename the file into the spool and must
// copy it, as with a drop folder on another disk or a network share.
func acrossFilesystems(t *testing.T) (*Spool, string) {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
		t.Fatalf("this test puts the spool on the tmpfs /dev/shm and the drop folder on disk, and /dev/shm is missing (%v): mount one (mount -t tmpfs tmpfs /dev/shm)", err)
	}
	dir, err := os.MkdirTemp("/dev/shm", "dab-spool-test-")
	if err != nil {
		t.Fatalf("create the spool on /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s, err := Open(filepath.Join(dir, "spool"))
	if err != nil {
		t.Fatal(err)
	}
	drop := t.TempDir()
	if device(t, drop) == device(t, s.Dir()) {
		t.Fatalf("the drop folder %s and the spool %s are on one filesystem: this test needs the spool on a tmpfs at /dev/shm and TMPDIR on disk", drop, s.Dir())
	}
	return s, drop
}

func device(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(st.Sys().(*syscall.Stat_t).Dev)
}

// randomBytes returns n reproducible bytes that differ everywhere (a copy
// that repeats or drops a block does not hash the same).
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var key [32]byte
	key[0] = byte(seed)
	rand.NewChaCha8(key).Read(b)
	return b
}

// writeDropped writes a file as cp does (mtime: now) or, with mtime set, as
// cp -p does (the original's old mtime and mode), and returns its bytes.
func writeDropped(t *testing.T, path string, size int, mode fs.FileMode, mtime time.Time) []byte {
	t.Helper()
	b := randomBytes(uint64(size), size)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func stateOf(t *testing.T, path string) (FileState, fs.FileInfo) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return FileState{Size: st.Size(), ModTime: st.ModTime()}, st
}

func inode(st fs.FileInfo) uint64 { return st.Sys().(*syscall.Stat_t).Ino }

// dirNames lists a folder (hidden names included).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

var droppedFiles = []struct {
	name  string
	size  int
	mode  fs.FileMode
	mtime time.Time // zero: as written (cp); set: kept from the original (cp -p)
}{
	{"written like cp", 64 << 10, 0o640, time.Time{}},
	{"written like cp -p", 64 << 10, 0o604, time.Date(2001, 2, 3, 4, 5, 6, 789000000, time.UTC)},
	{"100 MB", 100 << 20, 0o644, time.Time{}},
}

// TestClaimAcrossFilesystems: a file in a drop folder on another filesystem
// than the spool is taken at the first claim, whole, with its mode and mtime.
func TestClaimAcrossFilesystems(t *testing.T) {
	t.Parallel()
	for _, tc := range droppedFiles {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, drop := acrossFilesystems(t)
			src := filepath.Join(drop, "f.bin")
			content := writeDropped(t, src, tc.size, tc.mode, tc.mtime)
			seen, before := stateOf(t, src)
			m, err := s.Claim(src, Input{Type: "generic", Path: "f.bin", Source: "watcher"}, seen)
			if err != nil {
				t.Fatalf("claim across filesystems: %v", err)
			}
			if m.Size != int64(len(content)) || m.SHA256 != harness.SHA256Hex(content) {
				t.Fatalf("manifest has %d bytes sha256 %s, want %d bytes %s", m.Size, m.SHA256, len(content), harness.SHA256Hex(content))
			}
			data, err := os.ReadFile(s.DataPath(m.ID))
			if err != nil || harness.SHA256Hex(data) != harness.SHA256Hex(content) {
				t.Fatalf("spool data is not the file (%d bytes, %v)", len(data), err)
			}
			_, copied := stateOf(t, s.DataPath(m.ID))
			if copied.Mode().Perm() != tc.mode || !copied.ModTime().Equal(before.ModTime()) {
				t.Errorf("copy has mode %v mtime %v, the file had %v %v", copied.Mode().Perm(), copied.ModTime(), tc.mode, before.ModTime())
			}
			// The original is kept, hidden, until the entry ends (a writer
			// dab cannot see would write into it).
			if left := dirNames(t, drop); len(left) != 1 || left[0] != ".dab-claim-"+m.ID {
				t.Fatalf("in the drop folder after the claim: %v, want only the kept original", left)
			}
			if left := dirNames(t, filepath.Join(s.Dir(), incomingDir)); len(left) != 0 {
				t.Fatalf("left in the incoming folder: %v", left)
			}
			if err := s.Remove(m.ID); err != nil {
				t.Fatal(err)
			}
			if left := dirNames(t, drop); len(left) != 0 {
				t.Fatalf("left in the drop folder after the entry ended: %v", left)
			}
		})
	}
}

// TestCrossFilesystemOriginalKeptUntilTheEntryEnds: where open writers
// cannot be seen, a file claimed across filesystems is written to after the
// claim (the writer paused longer than the settle time). Its original is
// kept until the entry ends, so nothing the writer wrote vanishes: an
// upload not yet started refuses the entry, which goes to the failed folder
// whole; an entry that ends (uploaded) gives the grown file back to the drop
// folder to be taken again whole, and one that did not grow deletes it; a
// claim undone (the queue is down) gives the original itself back. With a
// shared spool the original goes at once, as whoever ends the entry may not
// see the drop folder.
func TestCrossFilesystemOriginalKeptUntilTheEntryEnds(t *testing.T) {
	t.Parallel()
	first, second := randomBytes(1, 100000), randomBytes(2, 100000)
	all := append(append([]byte{}, first...), second...)
	claim := func(t *testing.T, s *Spool, src string) (*Manifest, func([]byte)) {
		t.Helper()
		finish := writerInProcess(os.O_WRONLY)(t, src, first)
		s.openForWriting = func(string) bool { return false } // cannot tell
		seen, _ := stateOf(t, src)
		m, err := s.Claim(src, Input{Type: "generic", Path: "slow.bin"}, seen)
		if err != nil || m.SHA256 != harness.SHA256Hex(first) {
			t.Fatalf("claim = %+v, %v", m, err)
		}
		return m, finish
	}
	t.Run("grew before the upload: failed whole", func(t *testing.T) {
		t.Parallel()
		s, drop := acrossFilesystems(t)
		m, finish := claim(t, s, filepath.Join(drop, "slow.bin"))
		finish(second)
		if _, _, err := s.OpenData(m.ID); !errors.Is(err, ErrDataChanged) {
			t.Fatalf("Open of an entry whose original grew after the claim = %v, want ErrDataChanged", err)
		}
		where, err := s.Reject(m.ID, t.TempDir(), Failure{Code: "SpoolChanged", Message: "grew"})
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(where); harness.SHA256Hex(b) != harness.SHA256Hex(all) {
			t.Fatalf("the failed folder holds %d bytes, want all %d", len(b), len(all))
		}
		if left := dirNames(t, drop); len(left) != 0 {
			t.Fatalf("left in the drop folder: %v", left)
		}
	})
	t.Run("grew during the upload: back to the drop folder whole", func(t *testing.T) {
		t.Parallel()
		s, drop := acrossFilesystems(t)
		src := filepath.Join(drop, "slow.bin")
		m, finish := claim(t, s, src)
		f, opened, err := s.OpenData(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		finish(second)
		// As the worker removes it: with what OpenData saw (its origin note).
		if err := s.RemoveOpened(opened); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(src); err != nil || harness.SHA256Hex(b) != harness.SHA256Hex(all) {
			t.Fatalf("the grown file is not back in the drop folder whole: %d bytes, %v", len(b), err)
		}
		if left := dirNames(t, drop); len(left) != 1 {
			t.Fatalf("drop folder holds %v", left)
		}
	})
	t.Run("did not grow: deleted with the entry", func(t *testing.T) {
		t.Parallel()
		s, drop := acrossFilesystems(t)
		m, finish := claim(t, s, filepath.Join(drop, "slow.bin"))
		finish(nil)
		if err := s.Remove(m.ID); err != nil {
			t.Fatal(err)
		}
		if left := dirNames(t, drop); len(left) != 0 {
			t.Fatalf("left in the drop folder: %v", left)
		}
	})
	t.Run("unclaimed: the original goes back", func(t *testing.T) {
		t.Parallel()
		s, drop := acrossFilesystems(t)
		src := filepath.Join(drop, "slow.bin")
		m, finish := claim(t, s, src)
		_, kept := stateOf(t, filepath.Join(drop, ".dab-claim-"+m.ID))
		if err := s.Unclaim(m.ID, src); err != nil {
			t.Fatal(err)
		}
		if _, back := stateOf(t, src); inode(back) != inode(kept) {
			t.Fatal("a copy went back, not the original")
		}
		finish(second)
		if b, _ := os.ReadFile(src); harness.SHA256Hex(b) != harness.SHA256Hex(all) {
			t.Fatalf("the file holds %d bytes, want all %d", len(b), len(all))
		}
		if list, _ := s.List(); len(list) != 0 {
			t.Fatalf("%d entries after Unclaim", len(list))
		}
	})
	t.Run("shared spool: removed at the claim", func(t *testing.T) {
		t.Parallel()
		s, drop := acrossFilesystems(t)
		s.SetShared(true)
		m, finish := claim(t, s, filepath.Join(drop, "slow.bin"))
		defer finish(nil)
		if left := dirNames(t, drop); len(left) != 0 {
			t.Fatalf("left in the drop folder: %v", left)
		}
		if _, err := os.Stat(filepath.Join(s.Dir(), m.ID, originFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal("origin note left in a committed entry")
		}
	})
}

// TestClaimAcrossFilesystemsPutsBackUntouched: a file that changed after the
// watcher looked goes back as it is: the same file (no copy there and back),
// with its mode and mtime.
func TestClaimAcrossFilesystemsPutsBackUntouched(t *testing.T) {
	t.Parallel()
	for _, tc := range droppedFiles {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, drop := acrossFilesystems(t)
			src := filepath.Join(drop, "f.bin")
			writeDropped(t, src, tc.size, tc.mode, tc.mtime)
			seen, _ := stateOf(t, src)
			f, err := os.OpenFile(src, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("written after the watcher looked")
			f.Close()
			if !tc.mtime.IsZero() {
				os.Chtimes(src, tc.mtime, tc.mtime)
			}
			_, before := stateOf(t, src)
			content, _ := os.ReadFile(src)
			if _, err := s.Claim(src, Input{Type: "generic", Path: "f.bin"}, seen); !errors.Is(err, ErrChanging) {
				t.Fatalf("claim of a changed file = %v, want ErrChanging", err)
			}
			_, after := stateOf(t, src)
			if inode(after) != inode(before) {
				t.Errorf("the file was replaced by a copy (inode %d, was %d)", inode(after), inode(before))
			}
			if after.Mode() != before.Mode() || !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
				t.Errorf("put back with mode %v mtime %v size %d; it had %v %v %d",
					after.Mode(), after.ModTime(), after.Size(), before.Mode(), before.ModTime(), before.Size())
			}
			if b, _ := os.ReadFile(src); harness.SHA256Hex(b) != harness.SHA256Hex(content) {
				t.Error("the file's bytes changed")
			}
			if left := dirNames(t, drop); len(left) != 1 {
				t.Errorf("drop folder holds %v, want only f.bin", left)
			}
			if list, _ := s.List(); len(list) != 0 {
				t.Error("entry committed for a changed file")
			}
			if left := dirNames(t, filepath.Join(s.Dir(), incomingDir)); len(left) != 0 {
				t.Errorf("left in the incoming folder: %v", left)
			}
		})
	}
}

// TestRecoverAcrossFilesystems: whatever point a crash cut a claim across
// filesystems short at, the file survives once: back in the drop folder as it
// was, or in the spool.
func TestRecoverAcrossFilesystems(t *testing.T) {
	t.Parallel()
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, tc := range []struct {
		name string
		// committed: the entry was committed before the crash.
		committed bool
		// grew: the original grew after the copy was committed.
		grew bool
		// undoing: the claim was being undone (the copy is gone already).
		undoing bool
		// shared: the spool is shared (SetShared), so a committed claim
		// ends at once; otherwise its original is kept until the entry ends.
		shared     bool
		wantAction RecoverAction // "": nothing to do
		wantInDrop bool
		wantEntry  bool
	}{
		{name: "copy cut short", wantAction: RecoverReturned, wantInDrop: true},
		{name: "committed, original kept", committed: true, wantEntry: true},
		{name: "committed, original kept and grew", committed: true, grew: true, wantEntry: true},
		{name: "shared, committed, original not yet removed", committed: true, shared: true, wantAction: RecoverCleaned, wantEntry: true},
		{name: "shared, committed, original grew after the copy", committed: true, grew: true, shared: true, wantAction: RecoverReturned, wantInDrop: true, wantEntry: true},
		{name: "committed, claim being undone", committed: true, grew: true, undoing: true, wantAction: RecoverReturned, wantInDrop: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, drop := acrossFilesystems(t)
			s.SetShared(tc.shared)
			src := filepath.Join(drop, "f.bin")
			content := writeDropped(t, src, 5000, 0o604, old)
			id := NewID()
			o := origin{Source: src, Claim: filepath.Join(drop, ".dab-claim-"+id)}
			o.Input.Type, o.Input.Path, o.Input.Source = "generic", "f.bin", "watcher"
			if err := os.Rename(src, o.Claim); err != nil {
				t.Fatal(err)
			}
			var dir string
			if tc.committed {
				m, err := s.Put(strings.NewReader(string(content)), Input{Type: "generic", Path: "f.bin", Source: "watcher"})
				if err != nil {
					t.Fatal(err)
				}
				id, dir = m.ID, filepath.Join(s.Dir(), m.ID)
			} else {
				tmp, unlock, err := s.newIncoming(id)
				if err != nil {
					t.Fatal(err)
				}
				unlock() // the crashed claimer's lock went with it
				dir = tmp
				os.WriteFile(filepath.Join(dir, dataFile), content[:1000], 0o600)
			}
			if tc.grew {
				f, _ := os.OpenFile(o.Claim, os.O_APPEND|os.O_WRONLY, 0)
				f.WriteString("more")
				f.Close()
			}
			if tc.undoing {
				os.Remove(s.DataPath(id))
			}
			_, before := stateOf(t, o.Claim)
			b, _ := json.Marshal(o)
			if err := os.WriteFile(filepath.Join(dir, originFile), b, 0o640); err != nil {
				t.Fatal(err)
			}

			got := s.Recover()
			if tc.wantAction == "" && len(got) != 0 || tc.wantAction != "" && (len(got) != 1 || got[0].Err != nil || got[0].Action != tc.wantAction) {
				t.Fatalf("Recover = %+v, want one %q", got, tc.wantAction)
			}
			if tc.wantAction == "" {
				// The original is kept until the entry ends.
				if _, after := stateOf(t, o.Claim); inode(after) != inode(before) {
					t.Error("the kept original was replaced")
				}
				if _, err := os.Stat(filepath.Join(dir, originFile)); err != nil {
					t.Errorf("the origin note of a kept original was removed: %v", err)
				}
				if list, _ := s.List(); len(list) != 1 {
					t.Fatalf("%d entries after Recover", len(list))
				}
				return
			}
			if tc.wantInDrop {
				_, after := stateOf(t, src)
				if inode(after) != inode(before) || after.Mode() != before.Mode() || !after.ModTime().Equal(before.ModTime()) {
					t.Errorf("returned file is not the original as it was: %v %v, was %v %v", after.Mode(), after.ModTime(), before.Mode(), before.ModTime())
				}
				if left := dirNames(t, drop); len(left) != 1 {
					t.Errorf("drop folder holds %v", left)
				}
			} else if left := dirNames(t, drop); len(left) != 0 {
				t.Errorf("drop folder holds %v after the committed claim was recovered", left)
			}
			list, _ := s.List()
			if tc.wantEntry != (len(list) == 1) || len(list) > 1 {
				t.Fatalf("%d entries after Recover", len(list))
			}
			if tc.wantEntry {
				if _, err := os.Stat(filepath.Join(dir, originFile)); !errors.Is(err, fs.ErrNotExist) {
					t.Error("origin note left in the committed entry")
				}
				if b, _ := os.ReadFile(s.DataPath(id)); harness.SHA256Hex(b) != harness.SHA256Hex(content) {
					t.Error("the committed entry's data changed")
				}
			}
		})
	}
}
