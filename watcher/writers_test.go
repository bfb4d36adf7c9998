package watcher

// Files that are still being written: slow writers, writers that pause past
// the settle time, and drops into a spool on another filesystem.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/spool/spooltest"
)

func TestSlowWriterIsTakenWhenComplete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.Settle = time.Second
	b.start(cfg, b.spool)
	path := filepath.Join(b.drop, "generic", "slow.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for i := range 12 { // about 3 seconds, pauses shorter than the settle time
		chunk := bytes.Repeat([]byte{byte(i)}, 100000)
		f.Write(chunk)
		all = append(all, chunk...)
		time.Sleep(250 * time.Millisecond)
		if len(spooltest.Entries(t, b.spool)) != 0 {
			t.Fatalf("taken after %d of 12 chunks", i+1)
		}
	}
	f.Close()
	b.eventually(10*time.Second, "the slow file", func() bool { return len(spooltest.Entries(t, b.spool)) == 1 })
	m := spooltest.Entries(t, b.spool)["generic/slow.bin"]
	if m.Size != int64(len(all)) || m.SHA256 != harness.SHA256Hex(all) {
		t.Fatalf("entry has %d bytes sha %s, want %d bytes sha %s", m.Size, m.SHA256, len(all), harness.SHA256Hex(all))
	}
}

// shmSpool returns a spool on the tmpfs /dev/shm, so that the drop folder
// (on disk, under TMPDIR) is on another filesystem, as a drop folder on
// another disk or a network share is.
func (b *bundle) shmSpool() *spool.Spool {
	b.t.Helper()
	if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
		b.t.Fatalf("this test puts the spool on the tmpfs /dev/shm and the drop folder on disk, and /dev/shm is missing (%v): mount one (mount -t tmpfs tmpfs /dev/shm)", err)
	}
	dir, err := os.MkdirTemp("/dev/shm", "dab-watcher-test-")
	if err != nil {
		b.t.Fatalf("create the spool on /dev/shm: %v", err)
	}
	b.t.Cleanup(func() { os.RemoveAll(dir) })
	sp, err := spool.Open(filepath.Join(dir, "spool"))
	if err != nil {
		b.t.Fatal(err)
	}
	os.MkdirAll(b.drop, 0o750)
	var drop, shm syscall.Stat_t
	if err := syscall.Stat(b.drop, &drop); err != nil {
		b.t.Fatal(err)
	}
	if err := syscall.Stat(sp.Dir(), &shm); err != nil {
		b.t.Fatal(err)
	}
	if drop.Dev == shm.Dev {
		b.t.Fatalf("the drop folder %s and the spool %s are on one filesystem: this test needs the spool on a tmpfs at /dev/shm and TMPDIR on disk", b.drop, sp.Dir())
	}
	return sp
}

func randomBytes(seed byte, n int) []byte {
	out := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(out)
	return out
}

// fileSum is the SHA-256 of a file's bytes.
func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestCrossFilesystemDrop: with the spool on another filesystem than the drop
// folder, files copied in by cp, by cp -p (an old mtime) and a 100 MB file
// are each taken once, whole, at the first claim.
func TestCrossFilesystemDrop(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sp := b.shmSpool()
	w := b.start(b.config(), sp)
	outside := t.TempDir()
	for _, f := range []struct {
		name string
		size int
		cp   []string
	}{
		{"cp.bin", 64 << 10, []string{"cp"}},
		{"cp-p.bin", 64 << 10, []string{"cp", "-p"}},
		{"big.bin", 100 << 20, []string{"cp"}},
	} {
		src := filepath.Join(outside, f.name)
		write(t, src, randomBytes(byte(len(f.cp)+f.size), f.size))
		if len(f.cp) > 1 {
			old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
			os.Chmod(src, 0o604)
			os.Chtimes(src, old, old)
		}
		args := append(f.cp[1:], src, filepath.Join(b.drop, "generic", f.name))
		if out, err := exec.Command(f.cp[0], args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", f.cp, err, out)
		}
	}
	b.eventually(30*time.Second, "3 entries", func() bool { return len(spooltest.Entries(t, sp)) == 3 })
	got := spooltest.Entries(t, sp)
	for _, name := range []string{"cp.bin", "cp-p.bin", "big.bin"} {
		m := got["generic/"+name]
		if want := fileSum(t, filepath.Join(outside, name)); m == nil || m.SHA256 != want || fileSum(t, sp.DataPath(m.ID)) != want {
			t.Errorf("%s: entry %+v does not hold the file", name, m)
		}
	}
	if logs := b.logs.String(); strings.Contains(logs, "watcher.still_changing") {
		t.Errorf("a cross-filesystem claim was put back as changing:\n%s", b.logs.Tail(3000))
	}
	if st := w.Stats(); st.Claimed != 3 {
		t.Errorf("%d claims for 3 files", st.Claimed)
	}
	// Each original stays, hidden, until its entry ends (a writer dab cannot
	// see would write into it); the entry's end removes it.
	if left, _ := os.ReadDir(filepath.Join(b.drop, "generic")); len(left) != 3 {
		t.Errorf("in the drop folder: %v, want the 3 kept originals", left)
	}
	for _, m := range got {
		if err := sp.Remove(m.ID); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := os.ReadDir(filepath.Join(b.drop, "generic")); len(left) != 0 {
		t.Errorf("left in the drop folder after the entries ended: %v", left)
	}
}

// startWriter writes first into a new file and keeps it open for writing,
// from this (the watcher's) process or from a child process; the function
// it returns writes second and closes the file.
func startWriter(t *testing.T, child bool, path string, first []byte) (finish func(second []byte)) {
	t.Helper()
	if child {
		return harness.WriterChild(t, path, first)
	}
	return harness.WriterInProcess(t, path, os.O_WRONLY, first)
}

// TestWriterPausingLongerThanSettle: a writer that holds its file open and
// pauses for longer than the settle time does not get its file cut short:
// nothing is taken while the file is open, and the entry holds every byte.
func TestWriterPausingLongerThanSettle(t *testing.T) {
	t.Parallel()
	for _, child := range []bool{false, true} {
		for _, across := range []bool{false, true} {
			name := map[bool]string{false: "goroutine", true: "child process"}[child] +
				map[bool]string{false: ", same filesystem", true: ", spool on another filesystem"}[across]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				sp := b.spool
				if across {
					sp = b.shmSpool()
				}
				cfg := b.config()
				cfg.Settle = 500 * time.Millisecond
				b.start(cfg, sp)
				path := filepath.Join(b.drop, "generic", "paused.bin")
				first, second := randomBytes(1, 100000), randomBytes(2, 100000)
				finish := startWriter(t, child, path, first)
				// The file stays open and unchanged past the settle time:
				// the watcher looks, finds a writer and says so.
				b.eventually(15*time.Second, "the watcher to find the file open", func() bool {
					return strings.Contains(b.logs.String(), "watcher.still_open")
				})
				if n := len(spooltest.Entries(t, sp)); n != 0 {
					t.Fatalf("the file was taken while its writer held it open: what it writes next would be lost\n%s", b.logs.Tail(3000))
				}
				finish(second)
				b.eventually(15*time.Second, "the whole file", func() bool { return len(spooltest.Entries(t, sp)) == 1 })
				all := append(append([]byte{}, first...), second...)
				m := spooltest.Entries(t, sp)["generic/paused.bin"]
				if m == nil || m.Size != int64(len(all)) || m.SHA256 != harness.SHA256Hex(all) || fileSum(t, sp.DataPath(m.ID)) != harness.SHA256Hex(all) {
					t.Fatalf("entry %+v does not hold all %d bytes (sha256 %s)", m, len(all), harness.SHA256Hex(all))
				}
				if err := sp.Remove(m.ID); err != nil { // as after its upload
					t.Fatal(err)
				}
				if left, _ := os.ReadDir(filepath.Join(b.drop, "generic")); len(left) != 0 {
					t.Errorf("left in the drop folder: %v", left)
				}
				if n := strings.Count(b.logs.String(), "watcher.still_open"); n != 1 {
					t.Errorf("watcher.still_open logged %d times, want once", n)
				}
			})
		}
	}
}
