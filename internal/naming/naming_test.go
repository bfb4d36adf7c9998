package naming

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/text/unicode/norm"
)

func TestValidateType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{"generic", true},
		{"cyoa", true},
		{"x-2", true},
		{"", false},
		{"CYOA", false},
		{"2d", false},
		{"-a", false},
		{"a/b", false},
		{"a b", false},
		{strings.Repeat("a", MaxTypeLen+1), false},
	}
	for _, tt := range tests {
		err := ValidateType(tt.in)
		if (err == nil) != tt.want {
			t.Errorf("ValidateType(%q) = %v, want ok=%v", tt.in, err, tt.want)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateType(%q) error %v does not wrap ErrInvalid", tt.in, err)
		}
	}
}

func TestCleanPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		wantErr string
	}{
		{"NODE_intro.png", ""},
		{"forest/NODE_a.png", ""},
		{"a b/c d.txt", ""},
		{"ünïcode/ファイル.png", ""},
		{"", "empty"},
		{"/etc/passwd", "absolute"},
		{"../x", `".."`},
		{"a/../../x", `".."`},
		{"a/./x", `"."`},
		{"a//x", "empty folder"},
		{"a/", "empty folder"},
		{`a\..\x`, "backslash"},
		{"a\x00b", "control"},
		{"a\nb", "control"},
		{"\xff\xfe", "UTF-8"},
		{".hidden", "hidden"},
		{"dir/.git/config", "hidden"},
		{" lead", "spaces"},
		{strings.Repeat("d", MaxSegmentBytes) + "/" + strings.Repeat("n", MaxFileNameBytes), ""},
		{strings.Repeat("d", MaxSegmentBytes+1) + "/n", "256 bytes long, the most is 255"},
		{"dir/" + strings.Repeat("n", MaxFileNameBytes+1), "241 bytes long, the most is 240"},
		{"a\u034Fb", "invisible character"}, // combining grapheme joiner
		{"a\uFE0Fb", "invisible character"}, // variation selector
		{"a\u115Fb", "invisible character"}, // Hangul filler
		{"a\u3164b", "invisible character"},
		{strings.Repeat("é", 128) + ".png", "bytes long"},
		{"invoice\u202Egnp.exe", "format character"}, // right-to-left override: reads "invoiceexe.png"
		{"a\u2066b", "format character"},             // isolate
		{"zero\u200Bwidth", "format character"},
		{"join\u200Der", "format character"},
		{"\uFEFFbom.txt", "format character"},
		{"soft\u00ADhyphen", "format character"},
		{"no\u00A0break", "space character"},
		{"ideo\u3000space", "space character"},
		{"line\u2028sep", "space character"},
		{"repl\uFFFDchar", "replacement"},
	}
	for _, tt := range tests {
		got, err := CleanPath(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.in {
				t.Errorf("CleanPath(%q) = %q, %v; want it accepted unchanged", tt.in, got, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("CleanPath(%q) error = %v, want one mentioning %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestKey(t *testing.T) {
	t.Parallel()
	k, err := Key("cyoa", "forest/NODE_a.png")
	if err != nil || k != "cyoa/forest/NODE_a.png" {
		t.Fatalf("Key = %q, %v", k, err)
	}
	if _, err := Key("cyoa", strings.Repeat("abcdefghi/", MaxKeyBytes/10)+"x"); err == nil || !strings.Contains(err.Error(), "S3 allows") {
		t.Fatalf("long key error = %v", err)
	}
	if _, err := Key("Bad", "a"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad type error = %v", err)
	}
}

func TestCheckMetadataKey(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		key, wantErr string
	}{
		{"price", ""},
		{"story", ""},
		{"x-camera.model_2", ""},
		{"", "1 to"},
		{strings.Repeat("k", MaxMetadataKeyLen+1), "1 to"},
		{"a b", "ASCII"},
		{"caf\u00e9", "ASCII"},
		{"sha256", "dab's own field"},
		{"SHA256", "lower-case"},
		{"Price", "lower-case"},
		{"owner", "dab's own field"},
		{"s3_key", "dab's own field"},
		{"content_type", "dab's own field"},
	} {
		err := CheckMetadataKey(tt.key)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid)) {
			t.Errorf("CheckMetadataKey(%q) = %v, want %q", tt.key, err, tt.wantErr)
		}
	}
}

// TestCleanPathNFC: a name composed (é as one character) and the same name
// decomposed (e + combining accent, as macOS writes it) are one key.
func TestCleanPathNFC(t *testing.T) {
	t.Parallel()
	composed, decomposed := "caf\u00e9/men\u00fc.txt", "cafe\u0301/menu\u0308.txt"
	a, errA := CleanPath(composed)
	b, errB := CleanPath(decomposed)
	if errA != nil || errB != nil || a != composed || b != composed {
		t.Fatalf("CleanPath: %q %v, %q %v; want both %q", a, errA, b, errB, composed)
	}
	ka, _ := Key("generic", composed)
	kb, _ := Key("generic", decomposed)
	if ka != kb {
		t.Fatalf("keys differ: %q vs %q", ka, kb)
	}
}

// FuzzKey checks that whatever a key is built from, an accepted key never
// escapes its type folder and never carries control characters.
func FuzzKey(f *testing.F) {
	for _, s := range []string{"NODE_a.png", "../x", "a/b/c", "a//b", `a\b`, ".x", "ü/ß", "e\u0301", "a\u202Eb", "\u00a0"} {
		f.Add("cyoa", s)
	}
	f.Fuzz(func(t *testing.T, typ, p string) {
		k, err := Key(typ, p)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if !strings.HasPrefix(k, typ+"/") || len(k) > MaxKeyBytes {
			t.Fatalf("key %q escapes type %q or is too long", k, typ)
		}
		for _, seg := range strings.Split(k, "/") {
			if seg == "" || seg == "." || seg == ".." || len(seg) > MaxSegmentBytes {
				t.Fatalf("key %q has segment %q", k, seg)
			}
		}
		for _, r := range k {
			if RuneProblem(r) != "" {
				t.Fatalf("key %q carries %U", k, r)
			}
		}
		if !norm.NFC.IsNormalString(k) {
			t.Fatalf("key %q is not NFC", k)
		}
		if again, err := Key(typ, strings.TrimPrefix(k, typ+"/")); err != nil || again != k {
			t.Fatalf("key %q is not stable: %q, %v", k, again, err)
		}
	})
}
