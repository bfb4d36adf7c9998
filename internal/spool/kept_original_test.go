package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestArchiveCrashWithKeptOriginal: a crash in Archive after the copy left
// the entry (DAB_DONE_DIR) and before the entry was removed must not give
// the kept original back to the drop folder: the file was uploaded and
// archived, and taken again it would be uploaded and archived twice.
func TestArchiveCrashWithKeptOriginal(t *testing.T) {
	t.Parallel()
	s, drop, _, m := claimedAcross(t)
	done := t.TempDir()
	crashAt(t, s, "archive.moved", func() { s.Archive(m.ID, done) })
	// Restart.
	s2, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	s2.Recover()
	if left := dirNames(t, drop); len(left) != 0 {
		t.Fatalf("after a crash in Archive and Recover, the drop folder holds %v: the archived file would be uploaded again", left)
	}
	if list, _ := s2.List(); len(list) != 0 {
		t.Fatalf("%d entries left", len(list))
	}
}

// TestCrossFilesystemMovesDoNotFollowSymlinks: a file in the drop folder
// (a kept original .dab-claim-<id>, or a file with a bad name) that a local
// user swaps for a symbolic link is never read through it: a move to the
// failed folder on another filesystem, or the claim's copy, must not copy
// the link's target (a file dab may read and the user may not).
func TestCrossFilesystemMovesDoNotFollowSymlinks(t *testing.T) {
	t.Parallel()
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "secret")
	secretBytes := []byte("S3_SECRET_KEY=do-not-leak\n")
	if err := os.WriteFile(secret, secretBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("RejectFile", func(t *testing.T) {
		t.Parallel()
		s, drop := acrossFilesystems(t)
		link := filepath.Join(drop, ".dab-claim-x")
		if err := os.Symlink(secret, link); err != nil {
			t.Fatal(err)
		}
		failed := filepath.Join(s.Dir(), "failed") // on /dev/shm
		where, _ := RejectFile(link, failed, FailureNote{Type: "generic", Path: "a.bin"})
		if where != "" {
			if b, err := os.ReadFile(where); err == nil && bytes.Equal(b, secretBytes) {
				t.Fatalf("the target of a symbolic link was copied into the failed folder (%s)", where)
			}
		}
	})
	t.Run("claim copy", func(t *testing.T) {
		// Claim copies from .dab-claim-<id> after checking it with Lstat;
		// a user who swaps a link in between and the original back after
		// the copy opened must find the copy refused.
		t.Parallel()
		s, drop := acrossFilesystems(t)
		link := filepath.Join(drop, ".dab-claim-y")
		if err := os.Symlink(secret, link); err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(s.Dir(), "copy")
		if _, _, err := copyFile(link, data); err == nil {
			b, _ := os.ReadFile(data)
			t.Fatalf("the claim's copy read through a symbolic link (%d bytes, the secret: %v)", len(b), bytes.Equal(b, secretBytes))
		}
	})
}

// TestUnclaimCrashWithKeptOriginal: a crash in Unclaim (the queue was down)
// after the original went back to the drop folder and before the entry was
// removed must not leave the entry too: the watcher queues every entry at
// start and takes the file again, so the file would be uploaded twice.
func TestUnclaimCrashWithKeptOriginal(t *testing.T) {
	t.Parallel()
	s, drop, src, m := claimedAcross(t)
	crashAt(t, s, "unclaim.returned", func() { s.Unclaim(m.ID, src) })
	s2, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	s2.Recover()
	list, _ := s2.List()
	left := dirNames(t, drop)
	if len(list)+len(left) != 1 {
		t.Fatalf("after a crash in Unclaim and Recover: %d entries and drop folder %v: the file would be uploaded twice", len(list), left)
	}
}

// TestKeptOriginalOnlyUnderItsClaimName: an origin note whose Claim names
// another file than .dab-claim-<id> beside the drop path is not trusted:
// Remove does not delete that file.
func TestKeptOriginalOnlyUnderItsClaimName(t *testing.T) {
	t.Parallel()
	s, drop, _, m := claimedAcross(t)
	other := filepath.Join(t.TempDir(), "someone-elses.bin")
	writeDropped(t, other, 5000, 0o644, time.Time{})
	note := filepath.Join(s.Dir(), m.ID, originFile)
	b, err := os.ReadFile(note)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte(filepath.Join(drop, ".dab-claim-"+m.ID)), []byte(other), 1)
	if err := os.WriteFile(note, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(other); err != nil {
		t.Fatalf("Remove deleted a file the origin note named as the original: %v", err)
	}
}

// claimedAcross claims a 5,000-byte drop-folder file into a spool on
// another filesystem (acrossFilesystems); its original is kept.
func claimedAcross(t *testing.T) (s *Spool, drop, src string, m *Manifest) {
	t.Helper()
	s, drop = acrossFilesystems(t)
	src = filepath.Join(drop, "a.bin")
	writeDropped(t, src, 5000, 0o644, time.Time{})
	seen, _ := stateOf(t, src)
	m, err := s.Claim(src, Input{Type: "generic", Path: "a.bin"}, seen)
	if err != nil {
		t.Fatal(err)
	}
	return s, drop, src, m
}

// crashAt runs f on s as a process killed at step would: f stops there
// (the crash point panics, and the panic ends f) and s is left as it was.
// f must reach step.
func crashAt(t *testing.T, s *Spool, step string, f func()) {
	t.Helper()
	type crash struct{}
	s.crashPoint = func(at string) {
		if at == step {
			panic(crash{})
		}
	}
	defer func() {
		s.crashPoint = nil
		r := recover()
		if r == nil {
			t.Fatalf("the crash point %s was never reached", step)
		}
		if _, ok := r.(crash); !ok {
			panic(r)
		}
	}()
	f()
}
