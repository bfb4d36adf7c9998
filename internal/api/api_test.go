package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	adminTok = "admin-token-0123456789"
	readTok  = "read-token-0123456789ab"
	ingTok   = "ingest-token-0123456789"
)

func testServer(t *testing.T, open bool) *httptest.Server {
	t.Helper()
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("# comment\nread "+readTok+"\n\ningest,purchase "+ingTok+"\n"), 0o600)
	tokens, err := LoadTokens(adminTok, file)
	if err != nil {
		t.Fatal(err)
	}
	if open {
		tokens = &Tokens{}
	}
	s := New(tokens, open, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, scope := range []string{ScopeRead, ScopeIngest, ScopePurchase, ScopeAdmin} {
		s.HandleFunc(http.MethodGet, "/t/"+scope, scope, func(w http.ResponseWriter, r *http.Request) {
			c, _ := CallerOf(r.Context())
			WriteJSON(w, http.StatusOK, map[string]string{"caller": c.Name})
		})
	}
	s.HandleFunc(http.MethodGet, "/public", ScopePublic, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	s.HandleFunc(http.MethodGet, "/panic", ScopePublic, func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func call(t *testing.T, method, url, token string) (int, ErrorBody, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body ErrorBody
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body, resp.Header
}

func TestScopes(t *testing.T) {
	t.Parallel()
	srv := testServer(t, false)
	tests := []struct {
		token, scope string
		want         int
	}{
		{"", ScopeRead, 401}, {"wrong-token-0123456789", ScopeRead, 401},
		{readTok, ScopeRead, 200}, {readTok, ScopeIngest, 403}, {readTok, ScopeAdmin, 403},
		{ingTok, ScopeIngest, 200}, {ingTok, ScopePurchase, 200}, {ingTok, ScopeRead, 403},
		{adminTok, ScopeRead, 200}, {adminTok, ScopeIngest, 200}, {adminTok, ScopePurchase, 200}, {adminTok, ScopeAdmin, 200},
	}
	for _, tt := range tests {
		code, body, hdr := call(t, http.MethodGet, srv.URL+"/t/"+tt.scope, tt.token)
		if code != tt.want {
			t.Errorf("token %q on scope %s: %d, want %d", tt.token, tt.scope, code, tt.want)
		}
		if code == 401 && (hdr.Get("WWW-Authenticate") == "" || body.Error.Code != "unauthorized") {
			t.Errorf("401 without WWW-Authenticate or code: %v %+v", hdr, body)
		}
		if code == 403 && !strings.Contains(body.Error.Message, tt.scope) {
			t.Errorf("403 does not name the scope: %+v", body)
		}
	}
	if code, _, _ := call(t, http.MethodGet, srv.URL+"/public", ""); code != http.StatusNoContent {
		t.Fatalf("public route: %d", code)
	}
}

func TestOpenMode(t *testing.T) {
	t.Parallel()
	srv := testServer(t, true)
	if code, _, _ := call(t, http.MethodGet, srv.URL+"/t/admin", ""); code != 200 {
		t.Fatalf("open mode refused: %d", code)
	}
}

func TestNotFoundMethodAndPanic(t *testing.T) {
	t.Parallel()
	srv := testServer(t, false)
	code, body, _ := call(t, http.MethodGet, srv.URL+"/nope", "")
	if code != 404 || body.Error.Code != "not_found" {
		t.Fatalf("404: %d %+v", code, body)
	}
	code, body, hdr := call(t, http.MethodPost, srv.URL+"/public", "")
	if code != 405 || hdr.Get("Allow") != "GET" || body.Error.Code != "method_not_allowed" {
		t.Fatalf("405: %d %+v %v", code, body, hdr)
	}
	code, body, _ = call(t, http.MethodGet, srv.URL+"/panic", "")
	if code != 500 || body.Error.Code != "internal" {
		t.Fatalf("panic: %d %+v", code, body)
	}
}

func TestLoadTokensErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		admin, content, want string
	}{
		{"short", "", "at least 16 characters"},
		{"", "read", `want "scope[,scope] token"`},
		{"", "root " + readTok, `unknown scope "root"`},
		{"", "read short", "line 1: a token must have"},
	}
	for i, tt := range tests {
		file := ""
		if tt.content != "" {
			file = filepath.Join(dir, string(rune('a'+i)))
			os.WriteFile(file, []byte(tt.content), 0o600)
		}
		if _, err := LoadTokens(tt.admin, file); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LoadTokens(%q, %q) = %v, want %q", tt.admin, tt.content, err, tt.want)
		}
	}
	if _, err := LoadTokens("", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "DAB_TOKENS_FILE") {
		t.Errorf("missing file: %v", err)
	}
	if tok, err := LoadTokens("", ""); err != nil || !tok.Empty() {
		t.Errorf("no tokens: %v", err)
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:80": true, "[::1]:8080": true, "127.1.2.3:1": true,
		"0.0.0.0:8080": false, ":8080": false, "192.168.1.5:8080": false, "example.com:80": false, "garbage": false,
	} {
		if IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%q) = %v", addr, !want)
		}
	}
}

// FuzzTokensFile: whatever the tokens file holds, loading it never panics
// and every accepted token is long enough and carries known scopes.
func FuzzTokensFile(f *testing.F) {
	f.Add("read " + readTok + "\n")
	f.Add("ingest,purchase " + ingTok)
	f.Add("# x\n\n admin   " + adminTok + "  \n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content string) {
		file := filepath.Join(dir, "tokens")
		os.WriteFile(file, []byte(content), 0o600)
		tok, err := LoadTokens("", file)
		if err != nil {
			return
		}
		for _, e := range tok.entries {
			for s := range e.scopes {
				if !knownScopes[s] {
					t.Fatalf("accepted scope %q", s)
				}
			}
		}
	})
}

// FuzzParseCredits: only whole numbers from 1 to the ledger's maximum pass.
func FuzzParseCredits(f *testing.F) {
	for _, s := range []string{"1", "0", "-1", "1.5", `"5"`, "1e3", "99999999999999999999", "null", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		n, err := ParseCredits(json.RawMessage(raw))
		if err == nil && (n < 1 || n > 1_000_000_000_000_000) {
			t.Fatalf("ParseCredits(%q) = %d", raw, n)
		}
	})
}
