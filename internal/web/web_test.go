package web

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
)

func TestSafeNext(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/assets?type=cyoa": "/assets?type=cyoa", "": "/assets", "https://evil.example/": "/assets",
		"//evil.example": "/assets", `/\evil.example`: "/assets", "assets": "/assets",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestTemplatesEscape renders every page with hostile data: names are user
// input and must come out as text.
func TestTemplatesEscape(t *testing.T) {
	t.Parallel()
	tokens, _ := api.LoadTokens("", "")
	c, err := Register(Deps{Server: api.New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))})
	if err != nil {
		t.Fatal(err)
	}
	evil := `<script>alert(1)</script>`
	rec := asset.Record{ID: "0123456789abcdef0123", Name: evil, Type: "cyoa", S3Key: "cyoa/" + evil, SHA256: strings.Repeat("a", 64),
		Owner: evil, Metadata: map[string]string{evil: evil}}
	pages := map[string]any{
		"assets": assetsData{Records: []asset.Record{rec}, Owner: evil, Name: evil},
		"asset":  assetData{Rec: rec, Meta: [][2]string{{evil, evil}}, Key: "k", Story: evil, CanBuy: true},
		"login":  map[string]string{"Next": evil},
	}
	for name, data := range pages {
		var b strings.Builder
		if err := c.pages[name].Execute(&b, view{Title: evil, LoggedIn: true, Error: evil, Data: data}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Contains(b.String(), evil) {
			t.Fatalf("page %s renders user input as markup", name)
		}
	}
}
