package main

// End-to-end regression tests of the security review (issue 10): secrets in
// Redis URLs, console sessions of revoked tokens, the throttle on failed
// logins and the static folder's listing.

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/api"
)

// TestSecurityURLSecretsNotPrinted: neither `dab config` nor the "Redis
// unreachable" error of `dab work` prints a password a URL carries: the
// Sentinel master's ?password=, the sentinels' own userinfo password, a
// cluster's, or a token in DAB_SERVER.
func TestSecurityURLSecretsNotPrinted(t *testing.T) {
	t.Parallel()
	// No servers needed: nothing here reaches Redis or S3.
	e := &e2e{t: t, dir: t.TempDir(), env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), testCache,
		"DAB_DATA_DIR=" + filepath.Join(t.TempDir(), "data"), "AWS_S3_BUCKET=dab-test-bucket", "AWS_REGION=us-east-1"}}
	secrets := []string{"sentinel-pw-1", "master-pw-2", "cluster-pw-3", "server-tok-4", "server-pw-5"}
	// No retries: go-redis otherwise spends about 40 s on unreachable sentinels.
	sentinel := []string{"DAB_REDIS_MODE=sentinel",
		"DAB_REDIS_URL=redis://:sentinel-pw-1@127.0.0.1:1?master_name=main&addr=127.0.0.1:2&password=master-pw-2&max_retries=-1&dialer_retries=1"}
	cluster := []string{"DAB_REDIS_MODE=cluster", "DAB_REDIS_URL=redis://dab:cluster-pw-3@127.0.0.1:1?addr=127.0.0.1:2"}
	noLeak := func(what, out string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s prints %q:\n%s", what, s, out)
			}
		}
	}

	out, errOut, code := e.run(append(sentinel, "DAB_SERVER=https://ops:server-pw-5@dab.example/?token=server-tok-4"), "config")
	if code != 0 || !strings.Contains(out, "master_name=main") || !strings.Contains(out, "127.0.0.1:2") || !strings.Contains(out, "dab.example") {
		t.Fatalf("dab config (exit %d):\n%s\n%s", code, out, errOut)
	}
	noLeak("dab config", out+errOut)

	for name, env := range map[string][]string{"sentinel": sentinel, "cluster": cluster} {
		out, errOut, code := e.run(env, "work")
		if code != 1 || !strings.Contains(errOut, "is unreachable") || !strings.Contains(errOut, "127.0.0.1:1") {
			t.Errorf("dab work, %s down: exit %d:\n%s%s", name, code, out, errOut)
		}
		noLeak("dab work ("+name+" down)", out+errOut)
	}

	// A URL that does not parse is not echoed (its password cannot be found).
	out, errOut, code = e.run([]string{"DAB_REDIS_URL=redis://:pa ss-word-6@127.0.0.1:1/0"}, "work")
	if code != 1 || !strings.Contains(errOut, "DAB_REDIS_URL") || strings.Contains(out+errOut, "ss-word-6") {
		t.Errorf("unparseable URL: exit %d:\n%s%s", code, out, errOut)
	}
}

// sigtermAndWait ends a dab process with SIGTERM and waits for it.
func (p *proc) sigtermAndWait(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("dab did not stop on SIGTERM:\n%s", p.output())
	}
}

// TestSecurityConsoleSessionEndsWithToken: log in to the console with
// tokens, rewrite DAB_TOKENS_FILE without one and with the other's scopes
// reduced, restart dab: both old cookies are refused (401 for the API,
// the login page for pages), and logging in again gives the reduced scopes.
func TestSecurityConsoleSessionEndsWithToken(t *testing.T) {
	t.Parallel()
	e, base := httpE2E(t)
	const (
		revoked = "console-revoked-token-0123"
		reduced = "console-reduced-token-0123"
	)
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("read "+revoked+"\nread,purchase@reduced "+reduced+"\n"), 0o600)
	e.env = append(e.env, "DAB_TOKENS_FILE="+tokens)
	p := e.start(nil, "serve")
	p.waitLog(t, "http.listening", 30*time.Second)
	clients := map[string]*http.Client{"revoked": session(t, base, revoked), "reduced": session(t, base, reduced)}
	status := func(c *http.Client, method, path string, form url.Values) int {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, base+path, body)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	buy := url.Values{"credits": {"5"}, "key": {"b1"}} // a bound login buys as its account
	for who, c := range clients {
		if code := status(c, "GET", "/metrics", nil); code != 200 {
			t.Fatalf("%s before the change: /metrics %d", who, code)
		}
	}
	// A login bound to one account does not see every account's tasks.
	if code := status(clients["reduced"], "GET", "/monitoring/api/queues", nil); code != http.StatusForbidden {
		t.Fatalf("bound login in the monitor: %d, want 403", code)
	}
	// 303: on to the purchase (which fails later: no such asset), not refused.
	if code := status(clients["reduced"], "POST", "/assets/0123456789abcdef0123/buy", buy); code != http.StatusSeeOther {
		t.Fatalf("purchase token may buy before the change: %d", code)
	}

	os.WriteFile(tokens, []byte("read "+reduced+"\n"), 0o600)
	p.sigtermAndWait(t)
	e.start(nil, "serve").waitLog(t, "http.listening", 30*time.Second)
	for who, c := range clients {
		if code := status(c, "GET", "/metrics", nil); code != http.StatusUnauthorized {
			t.Errorf("%s's old session after the restart: /metrics %d, want 401", who, code)
		}
		req, _ := http.NewRequest("GET", base+"/assets", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
			t.Errorf("%s's old session after the restart: /assets %d to %q, want the login page", who, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	again := session(t, base, reduced)
	if code := status(again, "GET", "/metrics", nil); code != 200 {
		t.Errorf("fresh login with the reduced token: /metrics %d", code)
	}
	if code := status(again, "POST", "/assets/0123456789abcdef0123/buy", buy); code != http.StatusForbidden {
		t.Errorf("fresh login with the reduced token: buy %d, want 403", code)
	}
}

// TestSecurityLoginThrottle: wrong tokens on /login and as bearer tokens
// share one budget per client address; when it is used up, both answer
// 429 with Retry-After and say when to try again. Behind a proxy that
// DAB_TRUSTED_PROXIES names, X-Forwarded-For tells clients apart. And
// /static/ lists nothing.
func TestSecurityLoginThrottle(t *testing.T) {
	t.Parallel()
	e, base := httpE2E(t)
	e.start([]string{"DAB_TRUSTED_PROXIES=127.0.0.1"}, "serve").waitLog(t, "http.listening", 30*time.Second)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	loginAs := func(tok, forwardedFor string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(url.Values{"token": {tok}, "next": {"/assets"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if forwardedFor != "" {
			req.Header.Set("X-Forwarded-For", forwardedFor)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		return resp
	}
	for range 3 { // right tokens do not count
		if resp := loginAs(e2eToken, ""); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("right token: %d", resp.StatusCode)
		}
	}
	for i := range api.LoginFailuresPerMinuteDefault {
		if resp := loginAs("wrong-token-0123456789", ""); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d, want 401", i, resp.StatusCode)
		}
	}
	for _, tok := range []string{"wrong-token-0123456789", e2eToken} {
		resp := loginAs(tok, "")
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "try again in") {
			t.Fatalf("after %d failures: %d, Retry-After %q:\n%s", api.LoginFailuresPerMinuteDefault, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
	}
	// The API shares the budget: a bearer token is not even looked at.
	req, _ := http.NewRequest("GET", base+"/v1/assets", nil)
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("bearer from the throttled address: %d", resp.StatusCode)
	}
	// Another client behind the trusted proxy has its own budget.
	if resp := loginAs("wrong-token-0123456789", "203.0.113.7"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token from another client: %d", resp.StatusCode)
	}
	if resp := loginAs(e2eToken, "203.0.113.8"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("right token from another client: %d", resp.StatusCode)
	}

	for path, want := range map[string]int{"/static/": 404, "/static/style.css": 200} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}
