package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// inodeOf is the inode number of name.
func inodeOf(t *testing.T, name string) uint64 {
	t.Helper()
	st, err := os.Lstat(name)
	if err != nil {
		t.Fatal(err)
	}
	return inode(st)
}

// freeNames lists .free.
func freeNames(t *testing.T, s *Spool) []string { return dirNames(t, filepath.Join(s.Dir(), freeDir)) }

// claimFiles drops n files and claims them in one batch.
func claimFiles(t *testing.T, s *Spool, n int, tag string) []*Manifest {
	t.Helper()
	drop := t.TempDir()
	var reqs []ClaimRequest
	for i := range n {
		p := filepath.Join(drop, fmt.Sprintf("%s-%02d.bin", tag, i))
		seen := dropFile(t, p, tag+" "+fmt.Sprint(i))
		reqs = append(reqs, ClaimRequest{Src: p, In: Input{Type: "generic", Path: filepath.Base(p), Source: "test"}, Seen: seen})
	}
	var out []*Manifest
	for i, r := range s.ClaimBatch(reqs) {
		if r.Err != nil {
			t.Fatalf("claim %d: %v", i, r.Err)
		}
		out = append(out, r.M)
	}
	return out
}

// lookAtFreeNow makes s's next take look at .free, whenever it last found
// it empty (it looks again only after freeLookEvery).
func lookAtFreeNow(s *Spool) { s.free.looked = time.Time{} }

// recycledOne claims a file and removes its entry, whose folder goes to
// .free for s's next entry to take, and returns its manifest.
func recycledOne(t *testing.T, s *Spool) *Manifest {
	t.Helper()
	m := claimFiles(t, s, 1, "recycled")[0]
	if err := s.Remove(m.ID); err != nil {
		t.Fatal(err)
	}
	lookAtFreeNow(s)
	return m
}

// TestRemovedEntriesAreRecycled: a removed entry's folder, manifest and
// spare note go to .free, holding nothing else; the next claims take them,
// so that they allocate no inode, and their entries are whole and their
// own: new manifest, new bytes, no note or state of the entry before.
func TestRemovedEntriesAreRecycled(t *testing.T) {
	t.Parallel()
	s := open(t)
	old := claimFiles(t, s, 5, "old")
	oldInodes := map[uint64]bool{}
	for _, m := range old {
		dir := filepath.Join(s.Dir(), m.ID)
		// State an entry can carry: a failure note and a multipart upload ID.
		if err := s.MarkFailed(m.ID, Failure{Code: "X", Message: "old failure"}); err != nil {
			t.Fatal(err)
		}
		if err := s.UploadState(m.ID).SaveUploadID("old-upload-id"); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"", manifestFile, spareFile} {
			oldInodes[inodeOf(t, filepath.Join(dir, f))] = true
		}
		if err := s.Remove(m.ID); err != nil {
			t.Fatal(err)
		}
		// The bytes go at once; the rest, a few bytes, when the folder is
		// taken (below: no new entry inherits them).
		names := dirNames(t, filepath.Join(s.Dir(), freeDir, m.ID))
		slices.Sort(names)
		if !slices.Equal(names, []string{failedFile, manifestFile, spareFile, uploadIDFile}) {
			t.Fatalf("recycled folder holds %v, want %s, %s, %s and %s", names, failedFile, manifestFile, spareFile, uploadIDFile)
		}
	}
	if n := len(freeNames(t, s)); n != 5 {
		t.Fatalf(".free holds %d folders, want 5", n)
	}

	lookAtFreeNow(s)
	for _, m := range claimFiles(t, s, 5, "new") {
		dir := filepath.Join(s.Dir(), m.ID)
		for _, f := range []string{"", manifestFile, spareFile} {
			if !oldInodes[inodeOf(t, filepath.Join(dir, f))] {
				t.Errorf("%s of entry %s is a new inode, want a recycled one", f, m.ID)
			}
		}
		got, err := s.Get(m.ID)
		if err != nil || got.ID != m.ID || got.SHA256 != m.SHA256 {
			t.Fatalf("entry %s reads back %+v, %v; want its own manifest", m.ID, got, err)
		}
		if _, failed, _ := s.FailureMark(m.ID); failed {
			t.Fatalf("entry %s carries the failure of the entry before", m.ID)
		}
		if id, _ := s.UploadState(m.ID).LoadUploadID(); id != "" {
			t.Fatalf("entry %s carries the multipart upload ID %q of the entry before", m.ID, id)
		}
		b, _ := os.ReadFile(s.DataPath(m.ID))
		if !bytes.HasPrefix(b, []byte("new ")) {
			t.Fatalf("entry %s holds %q", m.ID, b)
		}
		for _, f := range []string{originFile, failedFile} {
			if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
				t.Fatalf("entry %s holds %s", m.ID, f)
			}
		}
	}
	if n := len(freeNames(t, s)); n != 0 {
		t.Fatalf(".free holds %d folders after 5 claims took them, want 0", n)
	}
}

// TestRemoveOpenedRecycles: an entry removed with what OpenData saw of it
// (as the worker removes an uploaded one) goes to .free like any other,
// without its bytes, and the next claim takes it.
func TestRemoveOpenedRecycles(t *testing.T) {
	t.Parallel()
	s := open(t)
	m := claimFiles(t, s, 1, "opened")[0]
	f, opened, err := s.OpenData(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := s.RemoveOpened(opened); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after RemoveOpened = %v, want ErrNotFound", err)
	}
	names := dirNames(t, filepath.Join(s.Dir(), freeDir, m.ID))
	slices.Sort(names)
	if !slices.Equal(names, []string{manifestFile, spareFile}) {
		t.Fatalf("recycled folder holds %v, want only %s and %s", names, manifestFile, spareFile)
	}
	lookAtFreeNow(s)
	next := claimFiles(t, s, 1, "next")[0]
	if got, err := s.Get(next.ID); err != nil || got.SHA256 != next.SHA256 {
		t.Fatalf("the next entry reads back %+v, %v", got, err)
	}
	if n := len(freeNames(t, s)); n != 0 {
		t.Fatalf(".free holds %d folders after the next claim, want 0", n)
	}
}

// TestStreamsNeverGetAnOriginNote: a stream's entry in a recycled claim
// folder carries the spare note, never an origin.json: Recover would take
// an incoming folder with one for a claim and move its bytes to the note's
// drop path.
func TestStreamsNeverGetAnOriginNote(t *testing.T) {
	t.Parallel()
	s := open(t)
	recycledOne(t, s)
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(w.tmp, spareFile)); err != nil {
		t.Fatalf("the stream did not get the recycled folder: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(w.tmp, originFile)); err == nil {
		t.Fatal("a stream's incoming folder holds an origin note")
	}
	// A crash now: Recover removes the stream's folder, as any stream's.
	w.unlock()
	if r := s.Recover(); len(r) != 1 || r[0].Action != RecoverRemoved {
		t.Fatalf("Recover = %+v, want the stream removed", r)
	}
}

// TestFreeIsBounded: past the bound, removed entries are deleted.
func TestFreeIsBounded(t *testing.T) {
	t.Parallel()
	s := open(t)
	s.free.max = 3
	for _, m := range claimFiles(t, s, 5, "f") {
		if err := s.Remove(m.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(s.Dir(), m.ID)); err == nil {
			t.Fatalf("entry %s still in place after Remove", m.ID)
		}
	}
	if n := len(freeNames(t, s)); n != 3 {
		t.Fatalf(".free holds %d folders, want 3", n)
	}
	if des, _ := os.ReadDir(filepath.Join(s.Dir(), incomingDir)); len(des) != 0 {
		t.Fatalf(".incoming holds %d folders after the removals", len(des))
	}
}

// TestClaimedFilesAreNeverReused: a claimed file is the user's inode; a
// reader (a viewer, an indexer: a claim does not wait for them) that still
// holds it open keeps reading its bytes after its entry is removed, and no
// later stream writes into it (nor into a hard link's other name).
func TestClaimedFilesAreNeverReused(t *testing.T) {
	t.Parallel()
	s := open(t)
	src := filepath.Join(t.TempDir(), "viewer-has-it-open.bin")
	seen := dropFile(t, src, "first user's bytes")
	other := filepath.Join(t.TempDir(), "other-name.bin")
	if err := os.Link(src, other); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Lstat(src)
	seen.ModTime = st.ModTime()
	reader, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	m, err := s.Claim(src, Input{Type: "generic", Path: "a.bin", Source: "watcher"}, seen)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(m.ID); err != nil {
		t.Fatal(err)
	}
	lookAtFreeNow(s)
	secret := "second user's confidential upload"
	m2, err := s.Put(bytes.NewReader([]byte(secret)), Input{Type: "generic", Path: "b.bin", Source: "http"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(s.Dir(), m2.ID, spareFile)); err != nil {
		t.Fatalf("the stream did not get the recycled folder: %v", err)
	}
	if b, _ := io.ReadAll(reader); string(b) != "first user's bytes" {
		t.Fatalf("a reader of the claimed file now reads %q", b)
	}
	if b, _ := os.ReadFile(other); string(b) != "first user's bytes" {
		t.Fatalf("the file's other name now holds %q", b)
	}
	if inode(st) == inodeOf(t, s.DataPath(m2.ID)) {
		t.Fatal("the next stream writes into the claimed file's inode")
	}
}

// TestTakenFoldersAreCleaned: what a power cut may bring back into a
// recycled folder (recycle's removals are not synced) never reaches the
// entry that takes it: no failure mark, no multipart upload ID, no bytes.
func TestTakenFoldersAreCleaned(t *testing.T) {
	t.Parallel()
	s := open(t)
	old := recycledOne(t, s)
	free := filepath.Join(s.Dir(), freeDir, old.ID)
	folder := inodeOf(t, free)
	os.WriteFile(filepath.Join(free, failedFile), []byte(`{"code":"Old"}`), 0o640)
	os.WriteFile(filepath.Join(free, uploadIDFile), []byte("old-upload-id"), 0o640)
	os.WriteFile(filepath.Join(free, dataFile), []byte("old bytes"), 0o640)
	m, err := s.Put(bytes.NewReader([]byte("new")), Input{Type: "generic", Path: "new.bin", Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if inodeOf(t, filepath.Join(s.Dir(), m.ID)) != folder {
		t.Fatal("the stream did not get the recycled folder")
	}
	if _, failed, _ := s.FailureMark(m.ID); failed {
		t.Fatal("the new entry carries the old failure mark")
	}
	if id, _ := s.UploadState(m.ID).LoadUploadID(); id != "" {
		t.Fatalf("the new entry carries the upload ID %q", id)
	}
	checkEntry(t, s, m, "new")
}

// TestRecoverKeepsOffALiveRemove: Recover in another process deletes what
// an interrupted Remove left (.incoming/<id>.removing), but not the folder
// of a Remove still running: that one may be recycled, and deletes through
// a descriptor Recover opened would land in the entry that takes it next.
func TestRecoverKeepsOffALiveRemove(t *testing.T) {
	t.Parallel()
	s := open(t)
	m := claimFiles(t, s, 1, "removed")[0]
	other, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	trash := filepath.Join(s.Dir(), incomingDir, m.ID+".removing")
	s.crashPoint = func(step string) {
		if step != "remove.renamed" {
			return
		}
		other.Recover()
		if _, err := os.Lstat(trash); err != nil {
			t.Errorf("Recover deleted the folder of a live Remove: %v", err)
		}
	}
	if err := s.Remove(m.ID); err != nil {
		t.Fatal(err)
	}
	s.crashPoint = nil
	if _, err := os.Lstat(filepath.Join(s.Dir(), freeDir, m.ID)); err != nil {
		t.Fatalf("the removed entry's folder was not recycled: %v", err)
	}

	// A Remove that died there (its lock went with it): its folder is
	// deleted.
	m = claimFiles(t, s, 1, "interrupted")[0]
	crashAt(t, s, "remove.renamed", func() { s.Remove(m.ID) })
	trash = filepath.Join(s.Dir(), incomingDir, m.ID+".removing")
	if _, err := os.Lstat(trash); err != nil {
		t.Fatalf("the crash left no folder to clean up: %v", err)
	}
	other.Recover()
	if _, err := os.Lstat(trash); err == nil {
		t.Fatal("Recover left an interrupted Remove's folder")
	}
}

// TestTakenFoldersAreLockedBeforeTheyShow: a recycled folder is locked
// before it is renamed into .incoming, so Recover in another process never
// finds it there unlocked and removes it as an abandoned stream.
func TestTakenFoldersAreLockedBeforeTheyShow(t *testing.T) {
	t.Parallel()
	s := open(t)
	recycledOne(t, s)
	tmp := filepath.Join(s.Dir(), incomingDir, NewID())
	unlock, ok := s.takeFree(tmp)
	if !ok {
		t.Fatal("no recycled folder taken")
	}
	defer unlock()
	if other, err := lockDir(tmp, false); err == nil {
		other()
		t.Fatal("the taken folder is not locked")
	}
}
