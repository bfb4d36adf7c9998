package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/harness"
)

const (
	adminTok = "admin-token-0123456789"
	readTok  = "read-token-0123456789ab"
	ingTok   = "ingest-token-0123456789"
)

func testServer(t *testing.T, open bool) *httptest.Server {
	t.Helper()
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("# comment\nread "+readTok+"\n\ningest,purchase@ing "+ingTok+"\n"), 0o600)
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
			WriteJSON(w, http.StatusOK, map[string]string{"caller": c.Name, "account": c.Account})
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
		{"", "read", `want "scope[,scope][@account] token"`},
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

// authServer is a Server with a read and a purchase route, sessions in a
// real redis-server under prefix, and the tokens of file.
func authServer(t *testing.T, rdb *redis.Client, prefix, file string) *Server {
	t.Helper()
	tokens, err := LoadTokens("", file)
	if err != nil {
		t.Fatal(err)
	}
	s := New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.SetSessions(NewSessions(rdb, prefix))
	for _, scope := range []string{ScopeRead, ScopePurchase} {
		s.HandleFunc(http.MethodGet, "/t/"+scope, scope, func(w http.ResponseWriter, r *http.Request) {
			c, _ := CallerOf(r.Context())
			WriteJSON(w, http.StatusOK, map[string]string{"caller": c.Name, "account": c.Account})
		})
	}
	return s
}

// authDo sends one request straight to s's handler from addr, with a session
// cookie or a bearer token.
func authDo(s *Server, path, addr, cookie, bearerTok string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = addr
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: cookie})
	}
	if bearerTok != "" {
		req.Header.Set("Authorization", "Bearer "+bearerTok)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

// sessionLogin starts a console session on s as the login form does.
func sessionLogin(t *testing.T, s *Server, tok string) string {
	t.Helper()
	c, err := s.Authenticate(httptest.NewRequest(http.MethodPost, "/login", nil), tok)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	id, err := s.sessions.Create(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestSessionEndsWithItsToken: a console session lasts only while its token
// is configured with the scopes it had at login. The tokens file is
// rewritten and the server restarted (a new Server on the same Redis): the
// removed token's session and the reduced token's session both end (401,
// deleted from Redis), an unchanged token's session goes on, and a fresh
// login gets the reduced scopes. Redis holds the token's SHA-256, never the
// token.
func TestSessionEndsWithItsToken(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	ctx := context.Background()
	const (
		tokA   = "token-a-read-purchase-0123"
		tokB   = "token-b-read-only-0123456"
		tokC   = "token-c-unchanged-0123456"
		prefix = "t:"
	)
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("read,purchase@alice "+tokA+"\nread "+tokB+"\nread "+tokC+"\n"), 0o600)
	before := authServer(t, rdb, prefix, file)
	ids := map[string]string{"A": sessionLogin(t, before, tokA), "B": sessionLogin(t, before, tokB), "C": sessionLogin(t, before, tokC)}
	for who, id := range ids {
		if rec := authDo(before, "/t/read", "192.0.2.1:1", id, ""); rec.Code != 200 {
			t.Fatalf("session %s before the change: %d", who, rec.Code)
		}
		m := rdb.HGetAll(ctx, prefix+"{web}:session:"+id).Val()
		for _, v := range m {
			if strings.Contains(v, "token-") {
				t.Fatalf("session %s stores the token: %v", who, m)
			}
		}
	}
	sum := sha256.Sum256([]byte(tokA))
	if got := rdb.HGet(ctx, prefix+"{web}:session:"+ids["A"], "token_sha256").Val(); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("session A records token digest %q", got)
	}
	if rec := authDo(before, "/t/purchase", "192.0.2.1:1", ids["A"], ""); rec.Code != 200 {
		t.Fatalf("A may purchase before the change: %d", rec.Code)
	}

	// B revoked, A reduced to read, C moved to another line; restart.
	os.WriteFile(file, []byte("# rotated\nread "+tokC+"\nread "+tokA+"\n"), 0o600)
	after := authServer(t, rdb, prefix, file)
	for _, who := range []string{"A", "B"} {
		if rec := authDo(after, "/t/read", "192.0.2.1:1", ids[who], ""); rec.Code != http.StatusUnauthorized {
			t.Errorf("session %s after its token changed: %d, want 401", who, rec.Code)
		}
		if n := rdb.Exists(ctx, prefix+"{web}:session:"+ids[who]).Val(); n != 0 {
			t.Errorf("session %s still in Redis", who)
		}
	}
	rec := authDo(after, "/t/read", "192.0.2.1:1", ids["C"], "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "line 2") {
		t.Errorf("unchanged token's session: %d %s", rec.Code, rec.Body)
	}
	if rec := authDo(after, "/t/read", "192.0.2.1:1", "", tokB); rec.Code != http.StatusUnauthorized {
		t.Errorf("revoked bearer: %d", rec.Code)
	}
	fresh := sessionLogin(t, after, tokA)
	if rec := authDo(after, "/t/read", "192.0.2.1:1", fresh, ""); rec.Code != 200 {
		t.Errorf("fresh login, read: %d", rec.Code)
	}
	if rec := authDo(after, "/t/purchase", "192.0.2.1:1", fresh, ""); rec.Code != http.StatusForbidden {
		t.Errorf("fresh login after the scopes were reduced, purchase: %d, want 403", rec.Code)
	}

	// A session written before sessions kept the digest cannot be checked.
	old := strings.Repeat("ab", 32)
	rdb.HSet(ctx, prefix+"{web}:session:"+old, "name", "admin token", "scopes", "admin")
	if rec := authDo(after, "/t/read", "192.0.2.1:1", old, ""); rec.Code != http.StatusUnauthorized || rdb.Exists(ctx, prefix+"{web}:session:"+old).Val() != 0 {
		t.Errorf("session without a digest: %d", rec.Code)
	}
}

// TestBearerThrottledPerAddress: wrong bearer tokens from one address use
// up its attempts, then it gets 429 with Retry-After (even with a right
// token, which is not looked at); other addresses are not affected, and
// right tokens never count.
func TestBearerThrottledPerAddress(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("read "+readTok+"\n"), 0o600)
	tokens, err := LoadTokens("", file)
	if err != nil {
		t.Fatal(err)
	}
	s := New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	const burst = 3
	s.SetThrottle(NewThrottle(burst, 100))
	s.HandleFunc(http.MethodGet, "/t/read", ScopeRead, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })

	for range 50 { // right tokens are never slowed
		if rec := authDo(s, "/t/read", "192.0.2.9:1", "", readTok); rec.Code != http.StatusNoContent {
			t.Fatalf("right token: %d", rec.Code)
		}
	}
	for i := range burst {
		if rec := authDo(s, "/t/read", "192.0.2.1:1", "", "wrong-token-0123456789"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d, want 401", i, rec.Code)
		}
	}
	for _, tok := range []string{"wrong-token-0123456789", readTok} {
		rec := authDo(s, "/t/read", "192.0.2.1:2", "", tok)
		var body ErrorBody
		json.NewDecoder(rec.Body).Decode(&body)
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || body.Error.Code != "throttled" ||
			!strings.Contains(body.Error.Message, "try again in") {
			t.Fatalf("after %d failures: %d %v %+v", burst, rec.Code, rec.Header(), body)
		}
	}
	if rec := authDo(s, "/t/read", "192.0.2.2:1", "", readTok); rec.Code != http.StatusNoContent {
		t.Fatalf("another address: %d", rec.Code)
	}
	if rec := authDo(s, "/t/read", "192.0.2.9:1", "", readTok); rec.Code != http.StatusNoContent {
		t.Fatalf("the address of the right tokens: %d", rec.Code)
	}
}

// throttleClock is a settable time for the throttle.
type throttleClock struct{ t time.Time }

func (c *throttleClock) now() time.Time { return c.t }

func TestThrottleBucket(t *testing.T) {
	t.Parallel()
	clock := &throttleClock{t: time.Unix(1_700_000_000, 0)}
	th := NewThrottle(LoginFailuresPerMinuteDefault, 3)
	th.now = clock.now
	for i := range LoginFailuresPerMinuteDefault {
		if _, ok := th.Allowed("a"); !ok {
			t.Fatalf("attempt %d refused", i)
		}
		th.Fail("a")
	}
	wait, ok := th.Allowed("a")
	perAttempt := time.Minute / LoginFailuresPerMinuteDefault
	if ok || wait < perAttempt-time.Second || wait > perAttempt {
		t.Fatalf("after the burst: wait %s, ok %v; want about %s", wait, ok, perAttempt)
	}
	clock.t = clock.t.Add(perAttempt)
	if _, ok := th.Allowed("a"); !ok {
		t.Fatal("no attempt after one refill period")
	}
	th.Fail("a")
	if _, ok := th.Allowed("a"); ok {
		t.Fatal("a second attempt after one refill period")
	}
	// Successes take nothing: an address that only succeeds is not even
	// remembered, however many requests it makes at once.
	for range 1000 {
		if _, ok := th.Allowed("b"); !ok {
			t.Fatal("an address without failures refused")
		}
	}
	if th.Left("b") != LoginFailuresPerMinuteDefault || th.Len() != 1 {
		t.Fatalf("after successes: left %d, %d addresses", th.Left("b"), th.Len())
	}
	// Guesses that all passed Allowed at once all count: the lockout is
	// longer, up to failBelowMax refills.
	for range 1000 {
		th.Fail("g")
	}
	wait, _ = th.Allowed("g")
	if maxWait := time.Duration(failBelowMax+1) * time.Minute; wait < 10*time.Minute || wait > maxWait {
		t.Fatalf("after 1000 concurrent failures: wait %s, want 10 to %s", wait, maxWait)
	}
	// Bounded memory: the least recently failed address is forgotten.
	for _, addr := range []string{"c", "d", "e"} {
		th.Fail(addr)
	}
	if th.Len() != 3 || th.Left("a") != LoginFailuresPerMinuteDefault {
		t.Fatalf("bound: %d addresses, a has %d left", th.Len(), th.Left("a"))
	}
	// Idle addresses whose bucket refilled are dropped.
	clock.t = clock.t.Add(2 * time.Minute)
	th.Allowed("f")
	if th.Len() != 0 {
		t.Fatalf("idle addresses kept: %d", th.Len())
	}
	var nilThrottle *Throttle
	if _, ok := nilThrottle.Allowed("x"); !ok {
		t.Fatal("a nil throttle refused")
	}
	nilThrottle.Fail("x")
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	tests := []struct {
		name, remote string
		xff          []string
		trust        bool
		want         string
	}{
		{"peer", "192.0.2.1:5555", nil, true, "192.0.2.1"},
		{"forwarded ignored without trusted proxies", "192.0.2.1:5555", []string{"203.0.113.9"}, false, "192.0.2.1"},
		{"forwarded ignored from an untrusted peer", "192.0.2.1:5555", []string{"203.0.113.9"}, true, "192.0.2.1"},
		{"trusted proxy", "10.1.1.1:5555", []string{"203.0.113.9"}, true, "203.0.113.9"},
		{"spoofed left entries skipped", "10.1.1.1:5555", []string{"198.51.100.1, 203.0.113.9"}, true, "203.0.113.9"},
		{"chain of trusted proxies", "10.1.1.1:5555", []string{"203.0.113.9, 10.2.2.2", "10.3.3.3"}, true, "203.0.113.9"},
		{"all trusted", "10.1.1.1:5555", []string{"10.2.2.2"}, true, "10.2.2.2"},
		{"garbage after a good hop", "10.1.1.1:5555", []string{"junk, 10.2.2.2"}, true, "10.2.2.2"},
		{"no header", "10.1.1.1:5555", nil, true, "10.1.1.1"},
		{"ipv6 by /64", "[2001:db8:1:2:3:4:5:6]:443", nil, false, "2001:db8:1:2::/64"},
		{"ipv6 proxy, v4-mapped client", "[::1]:443", []string{"::ffff:203.0.113.9"}, true, "203.0.113.9"},
		{"unreadable peer", "@", nil, false, "unknown"},
	}
	for _, tt := range tests {
		s := New(&Tokens{}, false, nil)
		if tt.trust {
			s.SetTrustedProxies(trusted)
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = tt.remote
		for _, h := range tt.xff {
			r.Header.Add("X-Forwarded-For", h)
		}
		if got := s.ClientAddr(r); got != tt.want {
			t.Errorf("%s: ClientAddr = %q, want %q", tt.name, got, tt.want)
		}
	}
}
