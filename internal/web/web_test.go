package web

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
)

func TestSafeNext(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/assets?type=cyoa": "/assets?type=cyoa", "": "/assets", "https://evil.example/": "/assets",
		"//evil.example": "/assets", `/\evil.example`: "/assets", "assets": "/assets",
		"/\t/evil.example/": "/assets", "/\n/evil.example": "/assets", "/\r\n/evil.example": "/assets", "/ /evil.example": "/assets",
		"/\u00a0/evil.example": "/assets", "/\x7f/evil": "/assets",
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

// TestStaticServesFilesNotListings: /static/ serves the console's files and
// answers 404 for folders instead of listing them.
func TestStaticServesFilesNotListings(t *testing.T) {
	t.Parallel()
	tokens, _ := api.LoadTokens("", "")
	s := api.New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := Register(Deps{Server: s}); err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec
	}
	for path, want := range map[string]string{"/static/style.css": "text/css", "/static/upload.js": "javascript"} {
		if rec := get(path); rec.Code != http.StatusOK || !strings.Contains(rec.Header().Get("Content-Type"), want) || rec.Body.Len() == 0 {
			t.Errorf("GET %s: %d %q", path, rec.Code, rec.Header().Get("Content-Type"))
		}
	}
	for _, path := range []string{"/static/", "/static/nope.css", "/static/style.css/", "/static/%2e/", "/static//"} {
		rec := get(path)
		if rec.Code == http.StatusOK || strings.Contains(rec.Body.String(), "upload.js") {
			t.Errorf("GET %s: %d, lists the folder:\n%s", path, rec.Code, rec.Body)
		}
	}
	if rec := get("/static/"); rec.Code != http.StatusNotFound {
		t.Errorf("GET /static/: %d, want 404", rec.Code)
	}
}

// TestLoginThrottled: wrong tokens on the login form use up the client
// address's attempts, then the form answers 429 with Retry-After and says
// when to try again; right tokens never count, and other addresses are not
// affected.
func TestLoginThrottled(t *testing.T) {
	t.Parallel()
	const readTok = "web-read-token-0123456789"
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("read "+readTok+"\n"), 0o600)
	tokens, err := api.LoadTokens("", file)
	if err != nil {
		t.Fatal(err)
	}
	s := api.New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	const burst = 3
	s.SetThrottle(api.NewThrottle(burst, 100))
	sessions := api.NewSessions(harness.RedisClient(t, harness.Redis(t)), "t:")
	s.SetSessions(sessions)
	if _, err := Register(Deps{Server: s, Sessions: sessions}); err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	post := func(addr, tok string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(url.Values{"token": {tok}, "next": {"/assets"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = addr
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for range 2 * burst {
		if rec := post("192.0.2.1:1", readTok); rec.Code != http.StatusSeeOther {
			t.Fatalf("right token: %d", rec.Code)
		}
	}
	for i := range burst {
		if rec := post("192.0.2.1:1", "wrong-token-0123456789"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d", i, rec.Code)
		}
	}
	for _, tok := range []string{"wrong-token-0123456789", readTok} {
		rec := post("192.0.2.1:2", tok)
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "try again in") {
			t.Fatalf("after %d failures: %d %v\n%s", burst, rec.Code, rec.Header(), rec.Body)
		}
	}
	if rec := post("192.0.2.2:1", readTok); rec.Code != http.StatusSeeOther {
		t.Fatalf("another address: %d", rec.Code)
	}
}

// TestPlurals: counts read "1 credit", "2 credits".
func TestPlurals(t *testing.T) {
	t.Parallel()
	tokens, _ := api.LoadTokens("", "")
	c, err := Register(Deps{Server: api.New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))})
	if err != nil {
		t.Fatal(err)
	}
	one, two := int64(1), int64(2)
	for _, tt := range []struct {
		page string
		data any
		want string
	}{
		{"account", map[string]any{"Account": ledger.Account{ID: "amy", Balance: 1}}, "<b>1</b> credit</p>"},
		{"account", map[string]any{"Account": ledger.Account{ID: "amy", Balance: 2}}, "<b>2</b> credits</p>"},
		{"asset", assetData{Rec: asset.Record{ID: "0123456789abcdef0123", Price: &one}}, "by the house for 1 credit<"},
		{"asset", assetData{Rec: asset.Record{ID: "0123456789abcdef0123", Owner: "amy", Listing: &two}}, "listed by amy for 2 credits<"},
	} {
		var b strings.Builder
		if err := c.pages[tt.page].Execute(&b, view{Title: "t", LoggedIn: true, Data: tt.data}); err != nil {
			t.Fatalf("%s: %v", tt.page, err)
		}
		if !strings.Contains(b.String(), tt.want) {
			t.Errorf("page %s lacks %q:\n%s", tt.page, tt.want, b.String())
		}
	}
}
