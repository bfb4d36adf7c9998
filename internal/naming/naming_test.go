package naming

import (
	"errors"
	"strings"
	"testing"
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
	if _, err := Key("cyoa", strings.Repeat("a", MaxKeyBytes)); err == nil || !strings.Contains(err.Error(), "S3 allows") {
		t.Fatalf("long key error = %v", err)
	}
	if _, err := Key("Bad", "a"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad type error = %v", err)
	}
}

// FuzzKey checks that whatever a key is built from, an accepted key never
// escapes its type folder and never carries control characters.
func FuzzKey(f *testing.F) {
	for _, s := range []string{"NODE_a.png", "../x", "a/b/c", "a//b", `a\b`, ".x", "ü/ß"} {
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
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("key %q has segment %q", k, seg)
			}
		}
	})
}
