package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// TestLogsShowInvisibleCharacters: the JSON log writes a name's bidi
// override, zero-width space or line separator as \uXXXX text (a log
// viewer would otherwise show the name reversed or two names alike),
// in string values and errors alike; everything else stays as it is.
func TestLogsShowInvisibleCharacters(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"generic/evil\u202egpj.exe", `generic/evil\u202egpj.exe`},
		{"a\u200bb", `a\u200bb`},
		{"line\u2028break", `line\u2028break`},
		{"tag\U000e0041", `tag\U000e0041`},
		{"plain ASCII \"quoted\" \\ and\ttab", "plain ASCII \"quoted\" \\ and\ttab"},
		{"café, 東京, emoji 😀, no-break\u00a0space", "café, 東京, emoji 😀, no-break\u00a0space"},
		{"", ""},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		newLogger(&buf, "json", "info").Info("upload.failed", "path", tt.in, "error", errors.New("rename "+tt.in))
		var line map[string]any
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("%q: not JSON: %v: %s", tt.in, err, buf.String())
		}
		if line["path"] != tt.want || line["error"] != "rename "+tt.want {
			t.Errorf("%q: path %q, error %q; want %q", tt.in, line["path"], line["error"], tt.want)
		}
		if strings.ContainsAny(buf.String(), "\u202e\u200b\u2028") {
			t.Errorf("%q: an invisible character reached the log: %q", tt.in, buf.String())
		}
	}
}

func FuzzVisible(f *testing.F) {
	for _, s := range []string{"a\u202eb", "plain", "\xff\xfe", "😀\u200d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, changed := visible(s)
		if !changed && v != s {
			t.Fatalf("visible(%q) = %q but says unchanged", s, v)
		}
		for _, r := range v {
			if r >= utf8.RuneSelf && (!unicode.IsGraphic(r) || r == utf8.RuneError) {
				t.Fatalf("visible(%q) = %q keeps %U", s, v, r)
			}
		}
	})
}
