package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dab-assets/dab/internal/naming"
)

// pathName is a named string type: slog encodes it as a value of its own.
type pathName string

// TestLogsShowInvisibleCharacters: a log line holds none of the characters
// a name may not have (a bidi override, a zero-width space, a Hangul
// filler, a line separator, a C1 control), wherever they are: a value, an
// error, a key, a group, a slice, a map, a named string type. In JSON they
// are JSON escapes, so the line decodes back to the names as they are;
// in text they read as \uXXXX. Everything else stays as it is, and a nil
// error pointer logs as slog always logged it.
func TestLogsShowInvisibleCharacters(t *testing.T) {
	t.Parallel()
	const rlo = "evil\u202egpj.exe"
	hidden := []string{rlo, "a\u200bb", "admin\u3164", "line\u2028break", "tag\U000e0041", "c1\u009b31m", "repl\ufffd", "nbsp\u00a0x"}
	kept := []string{"plain ASCII \"quoted\" \\ and\ttab", "café, 東京, emoji 😀", ""}
	for _, format := range []string{"json", "text"} {
		for _, s := range append(hidden, kept...) {
			var buf bytes.Buffer
			l := newLogger(&buf, format, "info")
			l.Info("upload.failed", "path", s, "error", errors.New("rename "+s), "paths", []string{s}, "meta", map[string]string{"k": s},
				"named", pathName(s), s+"key", 1)
			l.WithGroup("g"+s).Info("grouped", "k", s)
			out := buf.String()
			for _, r := range out {
				if naming.RuneProblem(r) != "" && r != '\n' && r != '\t' {
					t.Errorf("%s, %q: %U reached the log: %q", format, s, r, out)
				}
			}
			if !utf8.ValidString(out) {
				t.Errorf("%s, %q: not UTF-8: %q", format, s, out)
			}
			if format != "json" {
				continue
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			var first, second map[string]any
			if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &first) != nil || json.Unmarshal([]byte(lines[1]), &second) != nil {
				t.Fatalf("%q: not two JSON lines: %q", s, out)
			}
			if first["path"] != s || first["error"] != "rename "+s || first["named"] != s || first[s+"key"] != 1.0 {
				t.Errorf("%q: decodes to path %q, error %q, named %q; want the name as it is", s, first["path"], first["error"], first["named"])
			}
			if g, _ := second["g"+s].(map[string]any); g == nil || g["k"] != s {
				t.Errorf("%q: group decodes to %v", s, second)
			}
		}
	}
	var buf bytes.Buffer
	newLogger(&buf, "json", "info").Info("m", "error", error((*fs.PathError)(nil)))
	if !strings.Contains(buf.String(), `"error":"<nil>"`) {
		t.Errorf("a nil *fs.PathError: %q", buf.String())
	}
}

func FuzzVisibleWriter(f *testing.F) {
	for _, s := range []string{"a\u202eb", "plain", "\xff\xfe", "😀\u200d", "\U000e0041"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var buf bytes.Buffer
		newLogger(&buf, "json", "info").Info("m", "v", s, s, s)
		var line map[string]any
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("%q: not JSON: %v: %q", s, err, buf.String())
		}
		for _, r := range buf.String() {
			if naming.RuneProblem(r) != "" && r != '\n' {
				t.Fatalf("%q: %U reached the log: %q", s, r, buf.String())
			}
		}
		if utf8.ValidString(s) && line["v"] != s {
			t.Fatalf("%q decodes to %q", s, line["v"])
		}
	})
}

// TestErrorsShowInvisibleCharacters: a file name in a command's error lines
// (the file's line, its message and the summary) is shown with every character a name may not
// have escaped: a control character, a bidi override, bytes that are not
// UTF-8. Raw, they would reorder or hide the line in a terminal.
func TestErrorsShowInvisibleCharacters(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	dir := t.TempDir()
	for _, tc := range []struct{ name, shown string }{
		{"up\x01load.bin", `up\x01load.bin`},
		{"evil\u202egpj.exe", `evil\u202egpj.exe`},
		{"bad\xffbyte.bin", `bad\xffbyte.bin`},
		{"new\nline.bin", `new\x0aline.bin`},
	} {
		file := filepath.Join(dir, tc.name)
		if err := os.WriteFile(file, []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := e.run(nil, "upload", file)
		if code == 0 || !strings.Contains(errOut, tc.shown) {
			t.Errorf("%q: exit %d, stderr %q; want the name shown as %s", tc.name, code, errOut, tc.shown)
		}
		// The file's line and the summary, each whole.
		lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
		if len(lines) != 2 || !utf8.ValidString(errOut) || !strings.Contains(lines[1], "1 of 1 file failed: "+filepath.Join(dir, tc.shown)) {
			t.Errorf("%q: want the file's line and the summary, valid UTF-8: %q", tc.name, errOut)
		}
		for _, r := range strings.Join(lines, "") {
			if naming.RuneProblem(r) != "" {
				t.Errorf("%q: %U reached the terminal: %q", tc.name, r, errOut)
			}
		}
	}
}

// TestErrorsAddNoLines: a name with a newline in an error (here the
// operating system's, quoting a file that does not exist) cannot add a
// line of its own to the terminal.
func TestErrorsAddNoLines(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	_, errOut, code := e.run(nil, "upload", "nofile\ndab: spoofed line")
	if code == 0 || !strings.Contains(errOut, `nofile\x0adab: spoofed line`) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, line := range strings.Split(strings.TrimSuffix(errOut, "\n"), "\n") {
		if strings.HasPrefix(line, "dab: spoofed") {
			t.Fatalf("a name added a line: %q", errOut)
		}
	}
}

func FuzzVisibleText(f *testing.F) {
	for _, s := range []string{"a\u202eb", "plain", "\xff\xfe", "tab\there", "line\nbreak", "\U000e0041", "\ufffd", "\x1b[2J"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := visibleText(s)
		if !utf8.ValidString(out) {
			t.Fatalf("%q: not UTF-8: %q", s, out)
		}
		for _, r := range out {
			if naming.RuneProblem(r) != "" {
				t.Fatalf("%q: %U left in %q", s, r, out)
			}
		}
		// Nothing to escape: the text is as it was.
		clean := utf8.ValidString(s)
		for _, r := range s {
			if naming.RuneProblem(r) != "" {
				clean = false
			}
		}
		if clean && out != s {
			t.Fatalf("%q changed to %q", s, out)
		}
	})
}

// TestOutputShowsNoControls: what a server answers (here a task whose
// fields carry an escape sequence, a bidi override, a bell and a newline)
// reaches the terminal escaped, in text and in JSON: nothing it sends can
// colour, clear, reorder or add a line.
func TestOutputShowsNoControls(t *testing.T) {
	t.Parallel()
	hostile := "x\x1b[2J\x1b[31m\u202eevil\x07\nFAKE: line"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": "upload-" + hostile, "type": "dab:upload", "queue": "uploads",
			"state": "archived", "attempts": 1, "last_error": hostile, "asset_id": hostile})
	}))
	defer srv.Close()
	env := map[string]string{"DAB_SERVER": srv.URL, "DAB_TOKEN": "t0k3n-for-the-test-server"}
	for _, args := range [][]string{{"tasks", "show", "upload-x"}, {"tasks", "show", "upload-x", "--json"}} {
		out, errOut, code := runIn(t, env, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d %s", args, code, errOut)
		}
		if strings.Contains(out, "\nFAKE") || strings.ContainsAny(out, "\x1b\x07\u202e") {
			t.Errorf("%v printed controls raw:\n%q", args, out)
		}
	}
}
