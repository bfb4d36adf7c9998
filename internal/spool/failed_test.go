package spool

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReject(t *testing.T) {
	t.Parallel()
	s := open(t)
	root := t.TempDir()
	for i := range 2 {
		m, err := s.Put(strings.NewReader("x"), Input{Type: "cyoa", Path: "forest/NODE_a.png"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Reject(m.ID, root, Failure{Code: "Conflict", Message: "why"})
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
			t.Fatal("entry kept after Reject")
		}
	}
}
