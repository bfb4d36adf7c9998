package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dab-assets/dab/internal/harness"
)

const (
	e2eReader = "console-read-token-0123456"
)

// consoleE2E runs `dab serve` with an admin and a read token.
func consoleE2E(t *testing.T) (*e2e, string) {
	t.Helper()
	e, base := httpE2E(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("read "+e2eReader+"\n"), 0o600)
	e.env = append(e.env, "DAB_TOKENS_FILE="+tokens, "DAB_SETTLE=200ms")
	e.start(nil, "serve").waitLog(t, "http.listening", 30*time.Second)
	return e, base
}

// browserless client with a cookie jar; token "" stays logged out.
func session(t *testing.T, base, token string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if token == "" {
		return c
	}
	resp, err := c.PostForm(base+"/login", url.Values{"token": {token}, "next": {"/assets"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/assets" {
		t.Fatalf("login: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, ck := range jar.Cookies(mustParse(base)) {
		if ck.Name == "dab_session" {
			return c
		}
	}
	t.Fatal("no session cookie")
	return nil
}

func mustParse(s string) *url.URL { u, _ := url.Parse(s); return u }

// TestConsoleAuth checks each page and action with no token, a read token
// and the admin token, and the monitor's write actions.
func TestConsoleAuth(t *testing.T) {
	t.Parallel()
	_, base := consoleE2E(t)
	clients := map[string]*http.Client{"none": session(t, base, ""), "read": session(t, base, e2eReader), "admin": session(t, base, e2eToken)}
	tests := []struct {
		method, path string
		form         url.Values
		want         map[string]int
	}{
		{"GET", "/assets", nil, map[string]int{"none": 303, "read": 200, "admin": 200}},
		{"GET", "/upload", nil, map[string]int{"none": 303, "read": 403, "admin": 200}},
		{"GET", "/accounts?id=x", nil, map[string]int{"none": 303, "read": 200, "admin": 200}},
		{"GET", "/stories", nil, map[string]int{"none": 303, "read": 200, "admin": 200}},
		{"GET", "/monitoring/", nil, map[string]int{"none": 303, "read": 200, "admin": 200}},
		{"GET", "/monitoring/api/queues", nil, map[string]int{"none": 401, "read": 200, "admin": 200}},
		{"POST", "/monitoring/api/queues/uploads:pause", nil, map[string]int{"none": 401, "read": 405, "admin": 204}},
		{"GET", "/metrics", nil, map[string]int{"none": 401, "read": 200, "admin": 200}},
		{"POST", "/accounts/zoe/grant", url.Values{"credits": {"5"}, "key": {"k1"}}, map[string]int{"none": 303, "read": 403, "admin": 303}},
		{"POST", "/assets/0123456789abcdef0123/buy", url.Values{"credits": {"5"}, "key": {"b1"}, "buyer": {"zoe"}}, map[string]int{"none": 303, "read": 403, "admin": 303}},
		{"GET", "/login", nil, map[string]int{"none": 200, "read": 200, "admin": 200}},
	}
	for _, tt := range tests {
		for who, want := range tt.want {
			var body io.Reader
			if tt.form != nil {
				body = strings.NewReader(tt.form.Encode())
			}
			req, _ := http.NewRequest(tt.method, base+tt.path, body)
			if tt.form != nil {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			resp, err := clients[who].Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("%s %s as %s: %d, want %d", tt.method, tt.path, who, resp.StatusCode, want)
			}
		}
	}
	// A cross-site form post is refused even with a session.
	req, _ := http.NewRequest("POST", base+"/accounts/zoe/grant", strings.NewReader("credits=5&key=k2"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Origin", "https://evil.example")
	resp, err := clients["admin"].Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site grant: %d", resp.StatusCode)
	}
	// Logging out ends the session.
	resp, _ = clients["read"].PostForm(base+"/logout", nil)
	resp.Body.Close()
	resp, _ = clients["read"].Get(base + "/assets")
	resp.Body.Close()
	if resp.StatusCode != 303 {
		t.Fatalf("after logout: %d", resp.StatusCode)
	}
}

// TestConsoleInBrowser drives headless Chromium through the console: log in,
// upload through the form, find the asset, buy it, see the owner change,
// open the story graph and the monitor. Screenshots go to
// $DAB_TEST_ARTIFACTS (default: a folder in the system temp dir).
func TestConsoleInBrowser(t *testing.T) {
	t.Parallel()
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("the browser test needs Chromium: apt-get install -y chromium (or run `make test`)")
	}
	e, base := consoleE2E(t)
	artifacts := os.Getenv("DAB_TEST_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(os.TempDir(), "dab-test-artifacts")
	}
	os.MkdirAll(artifacts, 0o755)
	t.Logf("screenshots in %s", artifacts)

	// Credits for the buyer, through the CLI.
	if out, errOut, code := e.run([]string{"DAB_SERVER=" + base, "DAB_TOKEN=" + e2eToken}, "credits", "grant", "buyer-1", "50", "--key", "g-buyer"); code != 0 {
		t.Fatalf("grant: %s %s", out, errOut)
	}
	file, _ := writeRandomFile(t, t.TempDir(), "NODE_start.png", 5000)
	edge, _ := writeRandomFile(t, t.TempDir(), "EDGE_start_to_cave.png", 500)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true),
		// No network here: hosts other than loopback (the monitor asks for
		// web fonts) fail at once instead of waiting for DNS.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first action starts the browser; its context must not time out.
	if err := chromedp.Do(bctx, chromedp.Navigate(base+"/login")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	ctx, cancelTimeout := context.WithTimeout(bctx, 3*time.Minute)
	defer cancelTimeout()
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg) // 100: PNG
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(artifacts, name+".png"), buf, 0o644)
		})
	}
	upload := func(path, name, metadata string) chromedp.Action[chromedp.Void] {
		fill := chromedp.SendKeys(`input[name=name]`, "forest/"+name)
		if metadata != "" {
			fill = chromedp.Steps(fill, chromedp.SendKeys(`input[name=metadata]`, metadata))
		}
		return chromedp.Steps(
			chromedp.Navigate(base+"/upload"),
			chromedp.WaitVisible(`#upload`),
			chromedp.SetValue(`select[name=type]`, "cyoa"),
			fill,
			chromedp.SetUploadFiles(`input[type=file]`, []string{path}),
			chromedp.Click(`#upload button[type=submit]`),
			chromedp.WaitVisible(`code.task`),
			chromedp.WaitVisible(`a.asset`), // the asset's page, known before the worker records it
		)
	}
	err = chromedp.Do(ctx,
		chromedp.Navigate(base+"/assets"),
		chromedp.WaitVisible(`input[name=token]`),
		chromedp.SendKeys(`input[name=token]`, e2eToken),
		chromedp.Submit(`input[name=token]`),
		chromedp.WaitVisible(`table.assets`),
		shot("01-assets-empty"),
		upload(file, "NODE_start.png", `{"price": "7"}`), // unpriced assets are not for sale
		shot("02-uploaded"),
		upload(edge, "EDGE_start_to_cave.png", ""),
	)
	if err != nil {
		t.Fatalf("log in and upload: %v", err)
	}
	// The worker records the asset; the list shows it.
	assetHref := ""
	harness.Eventually(t, 30*time.Second, "the uploaded asset in the list", func() bool {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/assets?name=NODE_start"), chromedp.WaitVisible(`table.assets`)); err != nil {
			t.Fatal(err)
		}
		if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('tr[data-asset]').length`)); n == 0 {
			return false
		}
		res, err := chromedp.Run(ctx, chromedp.AttributeValue(`tr[data-asset] a`, "href"))
		if err != nil {
			t.Fatal(err)
		}
		assetHref = res.Value
		return assetHref != ""
	}, nil)
	err = chromedp.Do(ctx,
		shot("03-assets"),
		chromedp.Navigate(base+assetHref),
		chromedp.WaitVisible(`#buy`),
		chromedp.SendKeys(`#buy input[name=buyer]`, "buyer-1"),
		chromedp.SetValue(`#buy input[name=credits]`, "7"),
		chromedp.Click(`#buy button[type=submit]`),
		chromedp.WaitVisible(`dl.purchase[data-status=succeeded]`),
		shot("04-purchased"),
	)
	if err == nil {
		// The purchase page names the asset and the buyer's new balance.
		receipt, rerr := chromedp.Run(ctx, chromedp.Text(`dl.purchase`))
		if rerr != nil || !strings.Contains(receipt, "NODE_start.png") || !strings.Contains(receipt, "buyer-1: 43 credits") {
			t.Fatalf("purchase page: %q %v", receipt, rerr)
		}
		err = chromedp.Do(ctx, chromedp.Navigate(base+assetHref), chromedp.WaitVisible(`dd.owner`))
	}
	if err != nil {
		sctx, cancelShot := context.WithTimeout(bctx, 10*time.Second)
		text, _ := chromedp.Run(sctx, chromedp.Text(`main`))
		chromedp.Do(sctx, shot("04-buy-failed"))
		cancelShot()
		t.Fatalf("buy: %v; the page said:\n%s", err, text)
	}
	owner, err := chromedp.Run(ctx, chromedp.Text(`dd.owner`))
	if err != nil || strings.TrimSpace(owner) != "buyer-1" {
		t.Fatalf("owner after the purchase: %q %v", owner, err)
	}
	// The story gets a cycle (start -> cave -> dungeon -> start), a self
	// loop, an end that hops to another story and a file without a role.
	dir := t.TempDir()
	var story []string
	for _, n := range []string{"NODE_cave.png", "NODE_dungeon.png", "EDGE_cave_to_dungeon.png", "EDGE_dungeon_to_start.png", "EDGE_cave_to_cave.png", "HOPTO_village.png", "cover.jpg"} {
		p, _ := writeRandomFile(t, dir, n, 300)
		story = append(story, p)
	}
	if out, errOut, code := e.run([]string{"DAB_SERVER=" + base, "DAB_TOKEN=" + e2eToken}, append([]string{"upload", "--type", "cyoa", "--folder", "forest", "--wait"}, story...)...); code != 0 {
		t.Fatalf("upload the story: exit %d\n%s%s", code, out, errOut)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/stories/forest"), chromedp.WaitVisible(`figure.graph svg`), shot("05-story")); err != nil {
		t.Fatal(err)
	}
	graph, err := chromedp.Run(ctx, chromedp.OuterHTML(`figure.graph svg`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`id="node-start"`, `id="node-cave"`, `id="node-dungeon"`, `id="end-0"`, `id="story-village"`, "(missing)"} {
		if !strings.Contains(graph, want) {
			t.Fatalf("graph lacks %s: %s", want, graph)
		}
	}
	// Every edge is drawn where it can be seen: a path of some length, an
	// arrowhead, and no point of it inside a box other than its two ends'.
	check, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		const boxes = [...document.querySelectorAll('figure.graph g.node')].map(g => ({name: g.querySelector('title').textContent, b: g.getBBox()}));
		const bad = [];
		let edges = 0;
		for (const e of document.querySelectorAll('figure.graph g.edge')) {
			edges++;
			const [from, to] = e.querySelector('title').textContent.split('->');
			const p = e.querySelector('path');
			const len = p.getTotalLength();
			if (len < 5) bad.push(e.id + ' has no length');
			if (!e.querySelector('polygon')) bad.push(e.id + ' has no arrowhead');
			for (let i = 0; i <= 50; i++) {
				const pt = p.getPointAtLength(len * i / 50);
				for (const n of boxes) {
					if (n.name === from || n.name === to) continue;
					const b = n.b;
					if (pt.x > b.x + 1 && pt.x < b.x + b.width - 1 && pt.y > b.y + 1 && pt.y < b.y + b.height - 1) bad.push(e.id + ' crosses ' + n.name);
				}
			}
		}
		return JSON.stringify({edges, bad});
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	if check != `{"edges":5,"bad":[]}` {
		t.Fatalf("edges of the cyclic story: %s (want 5 edges, none hidden)", check)
	}
	problems, err := chromedp.Run(ctx, chromedp.Text(`ul.problems`))
	if err != nil || !strings.Contains(problems, "cover.jpg") || !strings.Contains(problems, "HOPTO_village") {
		t.Fatalf("the file without a role, or the end that hops nowhere, is not listed: %q %v", problems, err)
	}
	// The monitor is a JavaScript app that keeps polling; do not wait for
	// the page to settle, wait for the queue to show.
	mctx, mcancel := context.WithTimeout(ctx, 15*time.Second)
	chromedp.Do(mctx, chromedp.Navigate(base+"/monitoring/"))
	mcancel()
	var monitor string
	harness.Eventually(t, 30*time.Second, "the monitor to show the uploads queue", func() bool {
		monitor, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		return err == nil && strings.Contains(monitor, "uploads")
	}, func() string {
		chromedp.Do(ctx, shot("06-monitor"))
		return fmt.Sprintf("the monitor shows %q (error %v)", monitor[:min(len(monitor), 400)], err)
	})
	chromedp.Do(ctx, shot("06-monitor"))
}

// TestConsolePages checks the pages' answers and escaping.
func TestConsolePages(t *testing.T) {
	t.Parallel()
	e, base := consoleE2E(t)
	c := session(t, base, e2eToken)
	evil := "<script>alert(1)</script>.png"
	f, _ := writeRandomFile(t, t.TempDir(), "x.png", 10)
	if _, errOut, code := e.run([]string{"DAB_SERVER=" + base, "DAB_TOKEN=" + e2eToken}, "upload", f, "--type", "cyoa", "--folder", "tale", "--wait"); code != 0 {
		t.Fatal(errOut)
	}
	req, _ := http.NewRequest("PUT", base+"/v1/assets/cyoa/tale/"+url.PathEscape(evil), strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 202 {
		t.Fatalf("upload of the evil name: %v %v", resp, err)
	}
	get := func(path string) (int, string) {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	harness.Eventually(t, 30*time.Second, "the evil name in the list", func() bool {
		_, body := get("/assets?type=cyoa")
		return strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;.png")
	}, nil)
	for _, path := range []string{"/assets?type=cyoa", "/stories/tale"} {
		if _, body := get(path); strings.Contains(body, "<script>alert") {
			t.Fatalf("%s renders a name as markup", path)
		}
	}
	tests := []struct {
		path, want string
		code       int
	}{
		{"/stories", "tale", 200},
		{"/stories/tale", "Starts at", 200},
		{"/stories/nope", "no story nope", 404},
		{"/v1/cyoa/stories/tale/graph", `"story": "tale"`, 200},
		{"/v1/cyoa/stories/nope/graph", "story_not_found", 404},
		{"/assets/0123456789abcdef0123", "no asset", 404},
		{"/accounts?id=bad%20id", "account", 400},
		{"/accounts?id=nobody", "nobody: <b>0</b> credits", 200},
		{"/accounts/nobody", "/accounts?id=nobody", 303},
		{"/purchases/none-such", "not found", 404},
		{"/upload", `enctype="multipart/form-data"`, 200},
	}
	for _, tt := range tests {
		code, body := get(tt.path)
		if code != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s: %d, want %d with %q", tt.path, code, tt.code, tt.want)
		}
	}
	// A drop-folder problem shows in the status strip.
	for _, kv := range e.env {
		if strings.HasPrefix(kv, "DAB_DROP_DIR=") {
			os.MkdirAll(filepath.Join(strings.TrimPrefix(kv, "DAB_DROP_DIR="), "photos"), 0o750)
		}
	}
	// The strip counts them and links to the problems page, which lists
	// each with its reason.
	harness.Eventually(t, 45*time.Second, "the unknown type folder in the status strip", func() bool {
		_, body := get("/assets")
		return strings.Contains(body, `<a class="problem bad" href="/problems">drop folder: 1 problem</a>`)
	}, nil)
	if code, body := get("/problems"); code != 200 || !strings.Contains(body, "photos") {
		t.Fatalf("problems page: %d %s", code, body)
	}
	// The monitor's pages link back to the console.
	if code, body := get("/monitoring/"); code != 200 || !strings.Contains(body, `href="/assets"`) || !strings.Contains(body, "dab console") {
		t.Fatalf("monitor page: %d %.300s", code, body)
	}
	// Metrics: dab's own next to asynq's.
	harness.Eventually(t, 10*time.Second, "upload metrics", func() bool {
		_, m := get("/metrics")
		return strings.Contains(m, `dab_uploads_total{result="uploaded"} 2`) && strings.Contains(m, `asynq_queue_size{queue="uploads:`) &&
			strings.Contains(m, "dab_watcher_rescans_total") && strings.Contains(m, "dab_spool_entries 0")
	}, nil)
	// A form without a file gets the form back with the reason.
	resp, err := c.Post(base+"/upload", "multipart/form-data; boundary=x", strings.NewReader("--x\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ncyoa\r\n--x--\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "the form has no file") {
		t.Fatalf("upload without a file: %d %s", resp.StatusCode, b)
	}
	// Grants: bad credits refused, good ones land.
	resp, _ = c.PostForm(base+"/accounts/ann/grant", url.Values{"credits": {"-2"}, "key": {"gk"}})
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("negative grant: %d", resp.StatusCode)
	}
	resp, _ = c.PostForm(base+"/accounts/ann/grant", url.Values{"credits": {"6"}, "key": {"gk"}})
	resp.Body.Close()
	if code, body := get("/accounts?id=ann"); code != 200 || !strings.Contains(body, "ann: <b>6</b> credits") {
		t.Fatalf("after the grant: %d", code)
	}
	// The accounts page lists who has credits, and times read to the second.
	code, body := get("/accounts?id=ann")
	if !strings.Contains(body, `<a href="/accounts?id=ann">ann</a></td><td>6</td>`) || !regexp.MustCompile(`<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>`).MatchString(body) {
		t.Fatalf("accounts page: %d %s", code, body)
	}
	// The upload form defaults to generic, as dab upload does.
	if _, body := get("/upload"); !regexp.MustCompile(`<select name="type"><option value="generic">`).MatchString(body) {
		t.Fatalf("upload form: %s", body)
	}
}

// TestConsoleWhileRedisIsDown: a logged-in user whose session cannot be
// read (Redis stopped) is told Redis is down (503), not sent to the login
// page; once Redis is back the same session works again.
func TestConsoleWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	e, base := consoleE2E(t)
	c := session(t, base, e2eToken)
	page := func() (int, string) {
		resp, err := c.Get(base + "/assets")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := page(); code != 200 {
		t.Fatalf("console after login: %d", code)
	}
	if err := e.redisSrv.Stop(); err != nil {
		t.Fatal(err)
	}
	if code, body := page(); code != http.StatusServiceUnavailable || !strings.Contains(body, "Redis is down") {
		t.Fatalf("console while Redis is down: %d, want 503 saying Redis is down:\n%.800s", code, body)
	}
	if err := e.redisSrv.Restart(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 20*time.Second, "the same session to work again", func() bool { code, _ := page(); return code == 200 }, nil)
}
