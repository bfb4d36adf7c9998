package spool

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestOpenRefusesDataThatGrew: bytes written into an entry's file after it
// was taken (a writer that kept it open) are not cut off by an upload of the
// manifest's size: Open refuses the entry and says why.
func TestOpenRefusesDataThatGrew(t *testing.T) {
	t.Parallel()
	s := open(t)
	m, err := s.Put(strings.NewReader("first 100 bytes"), Input{Type: "generic", Path: "a.txt"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(s.DataPath(m.ID), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(", and the rest, written after the claim")
	f.Close()
	file, got, err := s.OpenData(m.ID)
	if file != nil {
		file.Close()
	}
	if !errors.Is(err, ErrDataChanged) || file != nil || got == nil || got.ID != m.ID ||
		!strings.Contains(err.Error(), "54 bytes") || !strings.Contains(err.Error(), "15") {
		t.Fatalf("Open of an entry whose data grew = %v, %v, %v; want ErrDataChanged with the manifest and both sizes", file, got, err)
	}
}
