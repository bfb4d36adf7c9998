package idem

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/harness"
)

func TestClaim(t *testing.T) {
	t.Parallel()
	s := New(harness.RedisClient(t, harness.Redis(t)), "t:")
	ctx := context.Background()
	if _, fresh, err := s.Claim(ctx, "upload", "k1", "fp-a", []byte("first")); err != nil || !fresh {
		t.Fatalf("first claim: %v %v", fresh, err)
	}
	stored, fresh, err := s.Claim(ctx, "upload", "k1", "fp-a", []byte("second"))
	if err != nil || fresh || string(stored) != "first" {
		t.Fatalf("replay: %q %v %v", stored, fresh, err)
	}
	if _, _, err := s.Claim(ctx, "upload", "k1", "fp-b", []byte("x")); !errors.Is(err, ErrConflict) {
		t.Fatalf("other parameters: %v", err)
	}
	// Keys are per scope.
	if _, fresh, _ := s.Claim(ctx, "grant", "k1", "fp-b", []byte("x")); !fresh {
		t.Fatal("scopes share keys")
	}
	if err := s.Release(ctx, "upload", "k1"); err != nil {
		t.Fatal(err)
	}
	if _, fresh, _ := s.Claim(ctx, "upload", "k1", "fp-b", []byte("x")); !fresh {
		t.Fatal("released key still held")
	}
}

func TestCheckKey(t *testing.T) {
	t.Parallel()
	for key, ok := range map[string]bool{"a": true, "order-42_x.y": true, "": false, "has space": false, "é": false, strings.Repeat("k", 256): false} {
		if err := CheckKey(key); (err == nil) != ok {
			t.Errorf("CheckKey(%q) = %v", key, err)
		}
	}
}

func FuzzCheckKey(f *testing.F) {
	f.Add("order-1")
	f.Add("\x00")
	f.Fuzz(func(t *testing.T, key string) {
		if CheckKey(key) == nil {
			for _, r := range key {
				if r < 0x21 || r > 0x7e {
					t.Fatalf("accepted %q", key)
				}
			}
		}
	})
}
