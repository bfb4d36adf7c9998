package main

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/webhook"
)

// TestHostileInputOnNewRoutes tries what an attacker would on the routes
// added for events, webhooks, accounts and the monitor: path segments with
// ../ and %2F, 300 bytes, a bidi override; numbers negative, huge, in
// exponent form; a 10 MB form; another principal's account; and a bound
// token where only operators may look. Each gets a clear refusal, and
// nothing reaches a store or a queue that it should not.
func TestHostileInputOnNewRoutes(t *testing.T) {
	t.Parallel()
	e, base := httpE2E(t)
	const bound = "hostile-bound-alice-0123456"
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("read "+e2eReader+"\nread,purchase@alice "+bound+"\n"), 0o600)
	hooks := filepath.Join(t.TempDir(), "webhooks")
	secret := webhook.SecretPrefix + base64.StdEncoding.EncodeToString([]byte("hostile-webhook-secret-0123456789"))
	os.WriteFile(hooks, []byte("https://hooks.example.com/dab "+secret+" credits.granted\n"), 0o600)
	e.env = append(e.env, "DAB_TOKENS_FILE="+tokens, "DAB_WEBHOOKS_FILE="+hooks)
	e.start(nil, "serve").waitLog(t, "http.listening", 30*time.Second)
	if out, errOut, code := e.run([]string{"DAB_SERVER=" + base, "DAB_TOKEN=" + e2eToken}, "credits", "grant", "bob", "5", "--key", "g-bob"); code != 0 {
		t.Fatalf("grant: %s%s", out, errOut)
	}

	const bidi = "%E2%80%AE" // U+202E, right-to-left override
	long := strings.Repeat("a", 300)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, rawURL, token, contentType string, body io.Reader) (int, string, http.Header) {
		t.Helper()
		req, err := http.NewRequest(method, rawURL, body)
		if err != nil {
			t.Fatalf("%s: %v", rawURL, err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, rawURL, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}

	// GET /v1/events: cursors and limits from outside.
	for _, tc := range []struct {
		query string
		code  int
		want  string
	}{
		{"after=..%2F..%2Fetc", 400, "bad_after"},
		{"after=%2F", 400, "bad_after"},
		{"after=" + long, 400, "bad_after"},
		{"after=-1-0", 400, "bad_after"},
		{"after=1e15-0", 400, "bad_after"},
		{"after=99999999999999999999999-0", 400, "bad_after"},
		{"after=" + bidi + "1-0", 400, "bad_after"},
		{"limit=-1", 400, "bad_limit"},
		{"limit=0", 400, "bad_limit"},
		{"limit=1e15", 400, "bad_limit"},
		{"limit=1000000000000000", 400, "bad_limit"},
		{"limit=1.5", 400, "bad_limit"},
		{"limit=" + bidi + "5", 400, "bad_limit"},
		{"after=0&limit=1000", 200, `"events"`},
	} {
		code, body, _ := do("GET", base+"/v1/events?"+tc.query, e2eReader, "", nil)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET /v1/events?%.60s: %d %.200s, want %d with %s", tc.query, code, body, tc.code, tc.want)
		}
	}
	// A bound token does not see bob's grant.
	if _, body, _ := do("GET", base+"/v1/events?after=0", bound, "", nil); strings.Contains(body, `"bob"`) {
		t.Errorf("alice's token sees bob's event: %.300s", body)
	}
	// A 10 MB body on a GET is not read.
	if code, _, _ := do("GET", base+"/v1/events", e2eReader, "application/json", strings.NewReader(strings.Repeat("x", 10<<20))); code != 200 {
		t.Errorf("GET with a 10 MB body: %d", code)
	}

	// GET /accounts/{id}: the redirect stays on this site and the account
	// page checks the name; a bound token gets only its own account.
	for _, id := range []string{"..%2F..%2Fetc", "%2F%2Fevil.example", long, bidi + "bob", "bob%0d%0aSet-Cookie:%20x=1"} {
		code, _, h := do("GET", base+"/accounts/"+id, e2eToken, "", nil)
		loc := h.Get("Location")
		if code != http.StatusSeeOther || !strings.HasPrefix(loc, "/accounts?id=") || strings.ContainsAny(loc, "\r\n") || h.Get("Set-Cookie") != "" {
			t.Errorf("GET /accounts/%.40s: %d Location %q, want 303 to /accounts?id=", id, code, loc)
			continue
		}
		if code, body, _ := do("GET", base+loc, e2eToken, "", nil); code != 400 && code != 404 && !(code == 200 && strings.Contains(body, ": <b>0</b>")) {
			t.Errorf("GET %s: %d %.200s", loc, code, body)
		}
	}
	if code, _, _ := do("GET", base+"/accounts?id=bob", bound, "", nil); code != http.StatusForbidden {
		t.Errorf("alice's token on bob's account: %d, want 403", code)
	}

	// GET /webhooks/{n}: only endpoint numbers that exist; operators only.
	for _, n := range []string{"0", "-1", "2", "1e15", "99999999999999999999", "..%2F1", "%2F1", long, bidi + "1", "1%00"} {
		if code, body, _ := do("GET", base+"/webhooks/"+n, e2eReader, "", nil); code != http.StatusNotFound || !strings.Contains(body, "no webhook endpoint") {
			t.Errorf("GET /webhooks/%.40s: %d %.200s, want 404", n, code, body)
		}
	}
	if code, body, _ := do("GET", base+"/webhooks/1", e2eReader, "", nil); code != 200 || strings.Contains(body, secret) {
		t.Errorf("GET /webhooks/1: %d (the secret shown: %v)", code, strings.Contains(body, secret))
	}
	for _, p := range []string{"/webhooks", "/webhooks/1"} {
		if code, _, _ := do("GET", base+p, bound, "", nil); code != http.StatusForbidden {
			t.Errorf("GET %s with a bound token: %d, want 403", p, code)
		}
	}

	// POST /webhooks/{n}/resend: admin only; event IDs from outside are
	// checked before any store sees them; a 10 MB form is refused.
	form := func(v url.Values) io.Reader { return strings.NewReader(v.Encode()) }
	const formType = "application/x-www-form-urlencoded"
	if code, _, _ := do("POST", base+"/webhooks/1/resend", e2eReader, formType, form(url.Values{"event": {"1-0"}})); code != http.StatusForbidden {
		t.Errorf("resend with a read token: %d, want 403", code)
	}
	for _, ev := range []string{"../x", "%2F", long, "-1-0", "1e15-0", "99999999999999999999999-0", "\u202e1-0", ""} {
		if code, body, _ := do("POST", base+"/webhooks/1/resend", e2eToken, formType, form(url.Values{"event": {ev}})); code != http.StatusBadRequest || !strings.Contains(body, "Not sent again") {
			t.Errorf("resend event %.40q: %d %.200s, want 400", ev, code, body)
		}
	}
	if code, _, _ := do("POST", base+"/webhooks/..%2F1/resend", e2eToken, formType, form(url.Values{"event": {"1-0"}})); code != http.StatusNotFound {
		t.Errorf("resend to a hostile endpoint number: %d, want 404", code)
	}
	if code, _, _ := do("POST", base+"/webhooks/1/resend", e2eToken, formType, strings.NewReader("event="+strings.Repeat("1", 10<<20))); code != http.StatusRequestEntityTooLarge {
		t.Errorf("resend with a 10 MB form: %d, want 413", code)
	}

	// /monitoring/: a bound token is refused whatever the path; the back
	// link is only put into HTML pages (an API answer is passed as it is).
	for _, p := range []string{"/monitoring/", "/monitoring/..%2F..%2Fv1%2Fevents", "/monitoring/api/queues", "/monitoring/" + long} {
		if code, _, _ := do("GET", base+p, bound, "", nil); code != http.StatusForbidden {
			t.Errorf("GET %.60s with a bound token: %d, want 403", p, code)
		}
	}
	if code, body, _ := do("GET", base+"/monitoring/api/queues", e2eReader, "", nil); code != 200 || strings.Contains(body, "dab console") {
		t.Errorf("monitor API: %d, the back link in JSON: %v", code, strings.Contains(body, "dab console"))
	}
}
