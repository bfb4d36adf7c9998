package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dab-assets/dab/internal/naming"
)

func open(t *testing.T) *Spool {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPutGetRemove(t *testing.T) {
	t.Parallel()
	s := open(t)
	data := bytes.Repeat([]byte("dab"), 100000)
	var progress int64
	m, err := s.Put(bytes.NewReader(data), Input{Type: "cyoa", Path: "forest/NODE_a.png", Source: "test",
		Metadata: map[string]string{"k": "v"}, Progress: func(n int64) { progress = n }})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if m.Size != int64(len(data)) || m.SHA256 != hex.EncodeToString(sum[:]) || m.Name != "NODE_a.png" ||
		m.Key() != "cyoa/forest/NODE_a.png" || m.ContentType != "image/png" || progress != int64(len(data)) {
		t.Fatalf("manifest = %+v, progress %d", m, progress)
	}
	got, err := s.Get(m.ID)
	if err != nil || got.SHA256 != m.SHA256 || got.Metadata["k"] != "v" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	f, _, err := s.OpenData(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(b, data) {
		t.Fatal("data differs")
	}
	list, err := s.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %v, %v", list, err)
	}
	if err := s.MarkFailed(m.ID, Failure{Code: "Conflict", Message: "why"}); err != nil {
		t.Fatal(err)
	}
	if fl, ok, err := s.FailureMark(m.ID); err != nil || !ok || fl.Code != "Conflict" || fl.At.IsZero() {
		t.Fatalf("FailureMark = %+v, %v, %v", fl, ok, err)
	}
	if err := s.Remove(m.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(m.ID); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := s.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Remove = %v", err)
	}
}

func TestPutRefusesBadNames(t *testing.T) {
	t.Parallel()
	s := open(t)
	for _, in := range []Input{
		{Type: "cyoa", Path: "../../etc/passwd"},
		{Type: "cyoa", Path: "/abs"},
		{Type: "../x", Path: "a"},
		{Type: "cyoa", Path: ""},
	} {
		if _, err := s.Put(strings.NewReader("x"), in); !errors.Is(err, naming.ErrInvalid) {
			t.Errorf("Put(%+v) = %v, want ErrInvalid", in, err)
		}
	}
	for _, id := range []string{"../x", "", "ABC"} {
		if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v", id, err)
		}
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n > 0 {
		f.n--
		return copy(p, "partial"), nil
	}
	return 0, errors.New("disk on fire")
}

func TestFailedPutLeavesNothing(t *testing.T) {
	t.Parallel()
	s := open(t)
	if _, err := s.Put(&failingReader{n: 3}, Input{Type: "generic", Path: "a.txt"}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v", err)
	}
	list, _ := s.List()
	incoming, _ := os.ReadDir(filepath.Join(s.Dir(), incomingDir))
	if len(list) != 0 || len(incoming) != 0 {
		t.Fatalf("left %d entries and %d incoming", len(list), len(incoming))
	}
}

// TestOpenHelpers: openFile, openRead and readFile behave as os.OpenFile,
// os.Open and os.ReadFile for what the spool does with them (create
// exclusively, write in place, read notes of any size, lock and sync
// folders, report a missing file as fs.ErrNotExist), and their
// descriptors are not inherited by child processes.
func TestOpenHelpers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	name := filepath.Join(dir, "note")
	f, err := openFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("exclusive create of an existing file: %v", err)
	}
	if flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("descriptor flags %v, %v: not close-on-exec", flags, err)
	}
	f.Close()
	ref, err := os.OpenFile(filepath.Join(dir, "by-os"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	ref.Close()
	st, err := os.Stat(name)
	refSt, rerr := os.Stat(ref.Name())
	if err != nil || rerr != nil || st.Mode() != refSt.Mode() {
		t.Fatalf("mode %v, os.OpenFile's %v (%v, %v)", st.Mode(), refSt.Mode(), err, rerr)
	}
	for _, size := range []int{0, 1, 511, 512, 4095, 4096, 4097, 100_000} {
		want := bytes.Repeat([]byte{'x'}, size)
		if err := os.WriteFile(name, want, 0o640); err != nil {
			t.Fatal(err)
		}
		if got, err := readFile(name); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("readFile of %d bytes: %d bytes, %v", size, len(got), err)
		}
	}
	if _, err := readFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := openRead(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing file: %v", err)
	}
	unlock, err := lockDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDir(dir, false); err == nil {
		t.Fatal("a locked folder locked twice")
	}
	unlock()
	if err := syncDir(dir); err != nil {
		t.Fatal(err)
	}
}

// TestListPastBadEntries: an entry removed while List runs (a worker
// finished it) is left out without an error; a damaged or missing manifest
// does not hide the other entries, and its problem names the file and what
// to do. The watcher's start-up recovery queues what List returns.
func TestListPastBadEntries(t *testing.T) {
	t.Parallel()
	s, err := Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, name := range []string{"a.bin", "b.bin", "c.bin", "d.bin"} {
		m, err := s.Put(strings.NewReader("bytes of "+name), Input{Type: "generic", Path: name})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), ids[1], manifestFile), []byte("{not json"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(s.Dir(), ids[2], manifestFile)); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if len(list) != 2 || list[0].ID != ids[0] || list[1].ID != ids[3] {
		t.Fatalf("List = %v, want %s and %s", list, ids[0], ids[3])
	}
	if err == nil || !strings.Contains(err.Error(), "manifest of "+ids[1]+" is damaged") || !strings.Contains(err.Error(), "move it into the drop folder") ||
		!strings.Contains(err.Error(), "entry "+ids[2]+" has no manifest") {
		t.Fatalf("List error = %v, want the damaged manifest of %s and the missing one of %s", err, ids[1], ids[2])
	}
	// A folder removed whole (as Remove does) is not a problem.
	if err := os.RemoveAll(filepath.Join(s.Dir(), ids[2])); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(); err == nil || strings.Contains(err.Error(), ids[2]) {
		t.Fatalf("List error = %v, want only %s's", err, ids[1])
	}
}
