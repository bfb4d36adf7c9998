package spool

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dab-assets/dab/internal/harness"
)

// openWriter starts writing a file: it writes first and keeps the file open
// for writing; the function it returns writes second and closes the file.
type openWriter func(t testing.TB, path string, first []byte) (finish func(second []byte))

// writerInProcess keeps the file open in this process (the watcher's own
// process: an open-writer check must not leave it out).
func writerInProcess(flag int) openWriter {
	return func(t testing.TB, path string, first []byte) func([]byte) {
		t.Helper()
		return harness.WriterInProcess(t, path, flag, first)
	}
}

var openWriters = []struct {
	name  string
	start openWriter
}{
	{"in this process, write-only", writerInProcess(os.O_WRONLY)},
	{"in this process, read-write", writerInProcess(os.O_RDWR)},
	{"in a child process", harness.WriterChild},
}

// TestClaimLeavesAFileOpenForWriting: a file that a process still holds open
// for writing is not claimed, however long the writer pauses: it stays where
// it is (the writer's next bytes go into it) and is taken whole once closed.
func TestClaimLeavesAFileOpenForWriting(t *testing.T) {
	t.Parallel()
	for _, w := range openWriters {
		for _, across := range []bool{false, true} {
			name := w.name + ", same filesystem"
			if across {
				name = w.name + ", across filesystems"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				s, drop := open(t), t.TempDir()
				if across {
					s, drop = acrossFilesystems(t)
				}
				src := filepath.Join(drop, "slow.bin")
				first, second := randomBytes(1, 100000), randomBytes(2, 100000)
				finish := w.start(t, src, first)
				seen, before := stateOf(t, src)
				if _, err := s.Claim(src, Input{Type: "generic", Path: "slow.bin"}, seen); !errors.Is(err, ErrInUse) {
					t.Fatalf("claim of a file open for writing = %v, want ErrInUse (what the writer writes next would be lost)", err)
				}
				if _, after := stateOf(t, src); inode(after) != inode(before) {
					t.Fatal("the file open for writing was replaced")
				}
				if list, _ := s.List(); len(list) != 0 {
					t.Fatal("entry committed for a file open for writing")
				}
				finish(second)
				seen, _ = stateOf(t, src)
				m, err := s.Claim(src, Input{Type: "generic", Path: "slow.bin"}, seen)
				if err != nil {
					t.Fatalf("claim once the writer closed the file: %v", err)
				}
				all := append(append([]byte{}, first...), second...)
				data, _ := os.ReadFile(s.DataPath(m.ID))
				if m.Size != int64(len(all)) || m.SHA256 != harness.SHA256Hex(all) || harness.SHA256Hex(data) != harness.SHA256Hex(all) {
					t.Fatalf("entry has %d bytes (data %d), want all %d", m.Size, len(data), len(all))
				}
			})
		}
	}
}

// TestClaimTakesAFileOpenForReading: readers (a viewer, an indexer, a
// virus scanner) do not hold a file back.
func TestClaimTakesAFileOpenForReading(t *testing.T) {
	t.Parallel()
	s := open(t)
	src := filepath.Join(t.TempDir(), "read.bin")
	seen := dropFile(t, src, "complete")
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := s.Claim(src, Input{Type: "generic", Path: "read.bin"}, seen); err != nil {
		t.Fatalf("claim of a file open only for reading: %v", err)
	}
}

// TestGrowthAfterTheClaimIsNotLost: where open writers cannot be seen (a
// file of another user and no CAP_LEASE, a network filesystem), a writer that
// writes again after the settle time loses nothing. Growth until the claim
// ends puts the file back, to be taken again whole; growth after it makes
// Open refuse the entry, whose file then holds every byte.
func TestGrowthAfterTheClaimIsNotLost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		across bool
		// writeAt is the open-writer check during which the writer writes
		// again: 2 is just after the rename, 3 just after the commit, 0
		// after Claim returned.
		writeAt int
	}{
		{"after the rename, same filesystem", false, 2},
		{"after the rename, across filesystems", true, 2},
		{"after the commit, same filesystem", false, 3},
		{"after the commit, across filesystems", true, 3},
		{"after the claim, same filesystem", false, 0},
		{"after the claim, across filesystems", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, drop := open(t), t.TempDir()
			if tc.across {
				s, drop = acrossFilesystems(t)
			}
			src := filepath.Join(drop, "slow.bin")
			first, second := randomBytes(1, 100000), randomBytes(2, 100000)
			all := append(append([]byte{}, first...), second...)
			finish := writerInProcess(os.O_WRONLY)(t, src, first)
			checks := 0
			s.openForWriting = func(string) bool {
				if checks++; checks == tc.writeAt {
					finish(second)
				}
				return false // cannot tell
			}
			seen, before := stateOf(t, src)
			m, err := s.Claim(src, Input{Type: "generic", Path: "slow.bin"}, seen)
			if tc.writeAt == 0 {
				if err != nil {
					t.Fatal(err)
				}
				finish(second)
				if _, _, err := s.OpenData(m.ID); !errors.Is(err, ErrDataChanged) {
					t.Fatalf("Open of an entry that grew after its claim = %v, want ErrDataChanged", err)
				}
				// The worker moves it to the failed folder: every byte.
				where, err := s.Reject(m.ID, t.TempDir(), Failure{Code: "SpoolChanged", Message: "grew"})
				if err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(where); harness.SHA256Hex(b) != harness.SHA256Hex(all) {
					t.Fatalf("the failed folder holds %d bytes, want all %d", len(b), len(all))
				}
				return
			}
			if !errors.Is(err, ErrChanging) {
				t.Fatalf("claim of a file written during the claim = %v, want ErrChanging", err)
			}
			_, after := stateOf(t, src)
			if b, _ := os.ReadFile(src); inode(after) != inode(before) || harness.SHA256Hex(b) != harness.SHA256Hex(all) {
				t.Fatalf("the file is not back as written: %d bytes, inode %d (was %d)", len(b), inode(after), inode(before))
			}
			if list, _ := s.List(); len(list) != 0 {
				t.Fatalf("%d entries left", len(list))
			}
			if left := dirNames(t, drop); len(left) != 1 {
				t.Fatalf("drop folder holds %v", left)
			}
			seen, _ = stateOf(t, src)
			if m, err = s.Claim(src, Input{Type: "generic", Path: "slow.bin"}, seen); err != nil || m.SHA256 != harness.SHA256Hex(all) {
				t.Fatalf("claim again = %+v, %v; want all %d bytes", m, err, len(all))
			}
		})
	}
}

// TestClaimRechecksWritersAfterTheRename: a writer that opened the file just
// after the first look is found by the check after the rename (when no one
// can open the file by its name any more), and the file goes back as it was.
func TestClaimRechecksWritersAfterTheRename(t *testing.T) {
	t.Parallel()
	for _, across := range []bool{false, true} {
		t.Run(map[bool]string{false: "same filesystem", true: "across filesystems"}[across], func(t *testing.T) {
			t.Parallel()
			s, drop := open(t), t.TempDir()
			if across {
				s, drop = acrossFilesystems(t)
			}
			src := filepath.Join(drop, "slow.bin")
			finish := writerInProcess(os.O_WRONLY)(t, src, randomBytes(1, 1000))
			s.openForWriting = func(path string) bool { return path != src && openForWriting(path) }
			seen, before := stateOf(t, src)
			if _, err := s.Claim(src, Input{Type: "generic", Path: "slow.bin"}, seen); !errors.Is(err, ErrInUse) {
				t.Fatalf("claim of a file opened for writing after the first look = %v, want ErrInUse", err)
			}
			if _, after := stateOf(t, src); inode(after) != inode(before) {
				t.Fatal("the file open for writing was not put back as it was")
			}
			if left := dirNames(t, drop); len(left) != 1 {
				t.Fatalf("drop folder holds %v", left)
			}
			if list, _ := s.List(); len(list) != 0 {
				t.Fatalf("%d entries for a file open for writing", len(list))
			}
			finish(randomBytes(2, 1000))
		})
	}
}
