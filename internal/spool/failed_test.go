package spool

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/naming"
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
		got, err := s.Reject(m.ID, root, Failure{Code: "Conflict", Message: "why", TaskID: "upload-" + m.ID})
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
		// The task that moved it finds it again by its note; another task,
		// or a path that leaves the folder, finds nothing.
		if where := RejectedFile(root, "cyoa", "forest/NODE_a.png", "upload-"+m.ID); where != got {
			t.Fatalf("RejectedFile = %q, want %s", where, got)
		}
		for _, bad := range [][3]string{{"cyoa", "forest/NODE_a.png", "upload-other"}, {"cyoa", "../../etc/NODE_a.png", "upload-" + m.ID},
			{"cyoa", "forest/NODE_a.png", ""}, {"", "cyoa/forest/NODE_a.png", "upload-" + m.ID}} {
			if where := RejectedFile(root, bad[0], bad[1], bad[2]); where != "" {
				t.Fatalf("RejectedFile(%q) = %q, want none", bad, where)
			}
		}
	}
}

// TestRejectKeepsTheNoteOfALongName: a drop-folder file whose name is too
// long to be a key (241 to 255 bytes: its .error.json could not be written
// beside it) and a 240-byte name already taken in the failed folder (".1"
// makes it too long) both reach the failed folder with their note, under
// a name shortened to fit, keeping the extension; the note keeps the name.
func TestRejectKeepsTheNoteOfALongName(t *testing.T) {
	t.Parallel()
	root, drop := t.TempDir(), t.TempDir()
	long := strings.Repeat("é", 124) + ".png" // 252 bytes
	fits := strings.Repeat("f", 236) + ".png" // 240 bytes, the longest valid name
	for _, tt := range []struct {
		name  string
		times int
	}{{long, 2}, {fits, 3}} {
		for i := range tt.times {
			src := filepath.Join(drop, tt.name)
			if err := os.WriteFile(src, []byte("bad"), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := RejectFile(src, root, FailureNote{Type: "cyoa", Path: tt.name, Size: 3,
				Failure: Failure{Code: "InvalidName", Message: "too long"}})
			if err != nil || got == "" {
				t.Fatalf("%d-byte name, time %d: RejectFile = %q, %v", len(tt.name), i, got, err)
			}
			base := filepath.Base(got)
			if len(base)+len(".error.json.tmp") > 255 || !strings.HasPrefix(tt.name, strings.TrimSuffix(strings.TrimSuffix(base, "."+itoa(i)), ".png")) ||
				!strings.Contains(base, ".png") {
				t.Fatalf("%d-byte name, time %d: stored as %q (%d bytes)", len(tt.name), i, base, len(base))
			}
			note, err := os.ReadFile(got + ".error.json")
			if err != nil || !strings.Contains(string(note), `"code": "InvalidName"`) || !strings.Contains(string(note), tt.name) {
				t.Fatalf("%d-byte name, time %d: note %s, %v", len(tt.name), i, note, err)
			}
			if b, err := os.ReadFile(got); err != nil || string(b) != "bad" {
				t.Fatalf("the file is not in the failed folder whole: %q, %v", b, err)
			}
		}
	}
	if left, _ := os.ReadDir(drop); len(left) != 0 {
		t.Fatalf("left in the drop folder: %d files", len(left))
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestFailedAndDoneFoldersHoldTheirFiles: a type or path that would leave
// the failed or done folder (a manifest dab did not write) moves nothing.
func TestFailedAndDoneFoldersHoldTheirFiles(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ typ, path string }{
		{"generic", "../../escape.bin"},
		{"generic", "a/../../escape.bin"},
		{"..", "escape.bin"},
		{".", "escape.bin"},
		{"generic", ""},
		{"", "escape.bin"},
	} {
		t.Run(tt.typ+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			root := filepath.Join(t.TempDir(), "failed")
			src := filepath.Join(t.TempDir(), "f")
			os.WriteFile(src, []byte("x"), 0o640)
			_, err := RejectFile(src, root, FailureNote{Type: tt.typ, Path: tt.path, Failure: Failure{Code: "X"}})
			if !errors.Is(err, naming.ErrInvalid) {
				t.Fatalf("RejectFile = %v, want naming.ErrInvalid", err)
			}
			if _, err := os.Lstat(src); err != nil {
				t.Fatalf("the file moved: %v", err)
			}

			s := open(t)
			m, err := s.Put(strings.NewReader("kept"), Input{Type: "generic", Path: "fine.bin"})
			if err != nil {
				t.Fatal(err)
			}
			mf := filepath.Join(s.Dir(), m.ID, manifestFile)
			m.Type, m.Path = tt.typ, tt.path
			if err := writeJSONSync(mf, m); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Archive(m.ID, root); !errors.Is(err, naming.ErrInvalid) {
				t.Fatalf("Archive = %v, want naming.ErrInvalid", err)
			}
			if _, err := os.Lstat(s.DataPath(m.ID)); err != nil {
				t.Fatalf("the entry's file moved: %v", err)
			}
		})
	}
}
