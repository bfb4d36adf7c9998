package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
