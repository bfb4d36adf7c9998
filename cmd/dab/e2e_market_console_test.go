package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/dab-assets/dab/internal/harness"
)

const (
	marketAliceTok = "e2e-market-alice-token-0123"
	marketBobTok   = "e2e-market-bob-token-012345"
)

// marketPage is one person's browser (its own browser context: its own
// cookies) in the console.
type marketPage struct {
	t         *testing.T
	ctx       context.Context
	who, base string
	artifacts string
}

// dump is what the page shows, for failure messages.
func (p *marketPage) dump() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : "(no body)"`))
	if err != nil {
		text = "(cannot read the page: " + err.Error() + ")"
	}
	return fmt.Sprintf("%s's browser at %s shows:\n%s", p.who, loc, text)
}

// shot saves a screenshot in the artifacts folder (best effort).
func (p *marketPage) shot(name string) {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	if buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		os.WriteFile(filepath.Join(p.artifacts, "market-"+name+".png"), buf, 0o644)
	}
}

func (p *marketPage) fatalf(format string, args ...any) {
	p.t.Helper()
	p.shot("failed-" + p.who)
	p.t.Fatalf("%s\n%s", fmt.Sprintf(format, args...), p.dump())
}

// do runs steps that must finish within 20 s.
func (p *marketPage) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.fatalf("%s: %v", what, err)
	}
}

// open navigates to path and waits for sel.
func (p *marketPage) open(path, sel string) {
	p.t.Helper()
	p.do("open "+path, chromedp.Navigate(p.base+path), chromedp.WaitReady(sel))
}

// js evaluates expr on the current page.
func (p *marketPage) js(expr string, out any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr))
	if err == nil {
		err = json.Unmarshal(v, out)
	}
	if err != nil {
		p.fatalf("evaluate %s: %v", expr, err)
	}
}

func (p *marketPage) text(expr string) string {
	p.t.Helper()
	var s string
	p.js(expr, &s)
	return strings.TrimSpace(s)
}

// until waits for the JavaScript condition cond to hold on the page, which
// may reload meanwhile (a pending purchase refreshes itself).
func (p *marketPage) until(what, cond string, timeout time.Duration) {
	p.t.Helper()
	var err error
	harness.Eventually(p.t, timeout, what, func() bool {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		defer cancel()
		var ok bool
		ok, err = chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
		return err == nil && ok
	}, func() string {
		p.shot("failed-" + p.who)
		return fmt.Sprintf("last error %v\n%s", err, p.dump())
	})
}

// login logs in through the form with token and checks whom the console
// says it acts for.
func (p *marketPage) login(token, account string) {
	p.t.Helper()
	p.do("log in", chromedp.Navigate(p.base+"/login"), chromedp.WaitVisible(`input[name=token]`),
		chromedp.SendKeys(`input[name=token]`, token), chromedp.Submit(`input[name=token]`), chromedp.WaitVisible(`table.assets`))
	if who := p.text(`document.querySelector('header .who').innerText`); who != account {
		p.fatalf("logged in as %q, want %q", who, account)
	}
	if nav := p.text(`document.querySelector('header nav').innerText`); !strings.Contains(nav, "My assets") || !strings.Contains(nav, "My balance") {
		p.fatalf("a bound login's menu lacks My assets / My balance: %q", nav)
	}
}

// buy submits the asset page's buy form and waits for the purchase to
// succeed; it returns the purchase ID.
func (p *marketPage) buy(id string, credits int) string {
	p.t.Helper()
	p.open("/assets/"+id, `#buy`)
	if p.text(`String(document.querySelector('#buy input[name=buyer]') !== null)`) != "false" {
		p.fatalf("the buy form of a bound login has a buyer field")
	}
	if form := p.text(`document.querySelector('#buy').innerText`); !strings.Contains(form, "Buying as "+p.who) {
		p.fatalf("the buy form does not say %q: %q", "Buying as "+p.who, form)
	}
	if v := p.text(`document.querySelector('#buy input[name=credits]').value`); v != fmt.Sprint(credits) {
		p.fatalf("the buy form offers %q credits, want the asking price %d", v, credits)
	}
	p.shot(p.who + "-buy")
	p.do("buy", chromedp.Click(`#buy button[type=submit]`))
	// A refused form shows its reason at once (p.error); a purchase is
	// pending until a worker applies it.
	p.until("the purchase is decided", `(() => { const d = document.querySelector('dl.purchase'); return !!document.querySelector('p.error') || (!!d && d.dataset.status !== 'pending'); })()`, 20*time.Second)
	if st := p.text(`(() => { const d = document.querySelector('dl.purchase'); return d ? d.dataset.status : 'no purchase page'; })()`); st != "succeeded" {
		p.fatalf("%s's purchase at %d: %s", p.who, credits, st)
	}
	p.shot(p.who + "-bought")
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || !strings.Contains(loc, "/purchases/") {
		p.fatalf("the purchase page is at %q (%v)", loc, err)
	}
	purchaseID, _ := url.PathUnescape(loc[strings.LastIndex(loc, "/")+1:])
	return purchaseID
}

// cookie is the browser's session cookie for the console.
func (p *marketPage) cookie() *http.Cookie {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{p.base}})
	if err != nil {
		p.fatalf("read the cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == "dab_session" {
			return &http.Cookie{Name: c.Name, Value: c.Value}
		}
	}
	p.fatalf("no dab_session cookie in %s's browser", p.who)
	return nil
}

// previewW×previewH is the size of the test's image.
const previewW, previewH = 48, 32

// clickDownload clicks the Download button and returns the bytes the
// browser saved (it follows the 302 to the store itself).
func (p *marketPage) clickDownload() []byte {
	p.t.Helper()
	dir := p.t.TempDir()
	yes := true
	if _, err := chromedp.CallBrowser(p.ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
		Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllowAndName, BrowserContextID: chromedp.FromContext(p.ctx).BrowserContextID,
		DownloadPath: dir, EventsEnabled: &yes,
	}); err != nil {
		p.fatalf("allow downloads: %v", err)
	}
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	begun := chromedp.BrowserEvents(ctx, cdpbrowser.DownloadWillBegin)
	progress := chromedp.BrowserEvents(ctx, cdpbrowser.DownloadProgress)
	p.do("click Download", chromedp.Click(`a#download`))
	guid, name := "", ""
	for ev, err := range begun {
		if err != nil {
			p.fatalf("no download began after the click: %v", err)
		}
		guid, name = ev.GUID, ev.SuggestedFilename
		break
	}
	for ev, err := range progress {
		if err != nil {
			p.fatalf("the download %s did not finish: %v", name, err)
		}
		if ev.GUID != guid {
			continue
		}
		if ev.State == cdpbrowser.DownloadProgressStateCanceled {
			p.fatalf("the browser canceled the download of %s", name)
		}
		if ev.State == cdpbrowser.DownloadProgressStateCompleted {
			break
		}
	}
	if name != "lighthouse.png" {
		p.fatalf("the browser saves the download as %q, want the asset's name", name)
	}
	b, err := os.ReadFile(filepath.Join(dir, guid)) // allowAndName: saved under its GUID
	if err != nil {
		p.fatalf("read the download: %v", err)
	}
	return b
}

// tinyPNG writes a small valid PNG and returns its path and SHA-256.
func tinyPNG(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, previewW, previewH))
	for x := range previewW {
		for y := range previewH {
			img.Set(x, y, color.NRGBA{R: uint8(5 * x), G: uint8(8 * y), B: 200, A: 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return p, hex.EncodeToString(sum[:])
}

// noRedirect is an HTTP client that shows redirects instead of following them.
var noRedirect = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// getDownload asks dab for a download with a bearer token or a cookie.
func getDownload(t *testing.T, u, token string, ck *http.Cookie) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ck != nil {
		req.AddCookie(ck)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func originOf(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Scheme == "" || p.Host == "" {
		return ""
	}
	return p.Scheme + "://" + p.Host
}

// TestConsoleMarketFlow drives the market through the console in headless
// Chromium, with bound logins: alice buys an asset from the house and lists
// it, bob buys it from her, downloads it (the bytes checked), and alice may
// no longer; the image preview comes from the bucket's origin, which the
// Content-Security-Policy allows for images, and no other.
func TestConsoleMarketFlow(t *testing.T) {
	t.Parallel()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("the browser test needs Chromium: apt-get install -y chromium (or run `make test`)")
	}
	e, base := httpE2E(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("read,purchase@alice "+marketAliceTok+"\nread,purchase@bob "+marketBobTok+"\n"), 0o600)
	e.env = append(e.env, "DAB_TOKENS_FILE="+tokens, "DAB_SETTLE=200ms")
	e.start(nil, "serve").waitLog(t, "http.listening", 30*time.Second)
	admin := []string{"DAB_SERVER=" + base, "DAB_TOKEN=" + e2eToken}
	artifacts := os.Getenv("DAB_TEST_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(os.TempDir(), "dab-test-artifacts")
	}
	os.MkdirAll(artifacts, 0o755)
	t.Logf("screenshots in %s", artifacts)

	// An image the house sells for 5.
	file, sum := tinyPNG(t, t.TempDir(), "lighthouse.png")
	out, errOut, code := e.run(admin, "upload", file, "--type", "generic", "--meta", "price=5", "--wait", "--json")
	var ul uploadLine
	json.Unmarshal([]byte(strings.TrimSpace(out)), &ul)
	var res struct {
		AssetID string `json:"asset_id"`
	}
	json.Unmarshal(ul.Result, &res)
	if code != 0 || ul.State != "completed" || ul.SHA256 != sum || res.AssetID == "" {
		t.Fatalf("upload: exit %d\n%s%s", code, out, errOut)
	}
	id := res.AssetID
	for _, g := range [][]string{{"alice", "10", "g-alice"}, {"bob", "10", "g-bob"}} {
		if out, errOut, code := e.run(admin, "credits", "grant", g[0], g[1], "--key", g[2]); code != 0 {
			t.Fatalf("grant %s: exit %d\n%s%s", g[0], code, out, errOut)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first action starts the browser; its context must not time out.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	// Each person has a browser context of their own: cookies are not shared.
	newPage := func(who string) *marketPage {
		ctx, cancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
		t.Cleanup(cancel)
		if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
			t.Fatalf("open a browser context for %s: %v", who, err)
		}
		return &marketPage{t: t, ctx: ctx, who: who, base: base, artifacts: artifacts}
	}

	// 1. alice buys the asset from the house, as herself.
	alice := newPage("alice")
	alice.login(marketAliceTok, "alice")
	alicePurchase := alice.buy(id, 5)

	// 2. alice lists it for 7 through the Sell form.
	alice.open("/assets/"+id, `#listing`)
	if owner := alice.text(`document.querySelector('dd.owner').innerText`); owner != "alice" {
		alice.fatalf("owner after alice's purchase: %q", owner)
	}
	alice.do("list for 7",
		chromedp.SetValue(`#listing input[name=credits]`, "7"),
		chromedp.Click(`#listing button[type=submit]`))
	alice.until("the listing is answered", `!!document.querySelector('p.flash, p.error')`, 10*time.Second)
	if sale := alice.text(`(document.querySelector('dd.sale') || {innerText: ''}).innerText`); sale != "listed by alice for 7 credits" {
		alice.fatalf("after listing, the asset page says %q", sale)
	}
	if flash := alice.text(`(document.querySelector('p.flash') || {innerText: ''}).innerText`); flash != "listed for 7 credits" {
		alice.fatalf("flash after listing: %q", flash)
	}
	alice.shot("alice-listed")

	// 3. bob, in a browser of his own, buys it from alice at 7.
	bob := newPage("bob")
	bob.login(marketBobTok, "bob")
	bob.open("/assets/"+id, `#buy`)
	if bob.text(`String(!!document.querySelector('#download') || !!document.querySelector('#listing'))`) != "false" {
		bob.fatalf("bob sees a Download button or a Sell form on alice's asset")
	}
	bobPurchase := bob.buy(id, 7)
	if paid := bob.text(`document.querySelector('dl.purchase').innerText`); !strings.Contains(paid, "alice") {
		bob.fatalf("the purchase page does not say bob paid alice: %q", paid)
	}
	bob.open("/assets/"+id, `table.sales`)
	if owner := bob.text(`document.querySelector('dd.owner').innerText`); owner != "bob" {
		bob.fatalf("owner after bob's purchase: %q", owner)
	}
	if sale := bob.text(`document.querySelector('dd.sale').innerText`); sale != "no: its owner has not listed it" {
		bob.fatalf("the listing did not end with the sale: %q", sale)
	}
	// The uploader's price is the house's, from before the first sale:
	// the metadata table says so rather than offer it as a price.
	if meta := bob.text(`document.querySelector('table.meta').innerText`); !strings.Contains(meta, "price (the house's, before it was sold)") {
		bob.fatalf("metadata table of an owned asset: %q", meta)
	}
	var sales [][]string
	bob.js(`Array.from(document.querySelectorAll('table.sales tbody tr')).map(tr => Array.from(tr.cells).map(td => td.innerText.trim()))`, &sales)
	want := [][]string{{"house", "alice", "5", alicePurchase}, {"alice", "bob", "7", bobPurchase}}
	if len(sales) != len(want) {
		bob.fatalf("sales table: %q, want %q", sales, want)
	}
	for i, row := range sales {
		if len(row) != 5 || row[0] == "" || !slices.Equal(row[1:], want[i]) {
			bob.fatalf("sales row %d: %q, want [time %q]", i, row, want[i])
		}
	}
	bob.shot("bob-owns")

	// 4. bob's Download button leads to the bytes, through a presigned URL
	// that needs no dab credential.
	href := bob.text(`(() => { const a = document.querySelector('a#download'); return a ? a.getAttribute('href') : 'no Download button'; })()`)
	if href != "/v1/assets/"+id+"/download" {
		bob.fatalf("bob's Download button links to %q", href)
	}
	resp, body := getDownload(t, base+href, "", bob.cookie())
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || loc == "" {
		t.Fatalf("bob's download with his console session: %d %s", resp.StatusCode, body)
	}
	if got, want := originOf(loc), originOf(e.s3.Endpoint()); got != want {
		t.Fatalf("the download leads to %s, not the bucket's origin %s", got, want)
	}
	dl, err := http.Get(loc) // no Authorization, no cookie
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(dl.Body)
	dl.Body.Close()
	got := sha256.Sum256(b)
	if dl.StatusCode != http.StatusOK || hex.EncodeToString(got[:]) != sum {
		t.Fatalf("the presigned URL gave %d, %d bytes with SHA-256 %x; want the upload's %s", dl.StatusCode, len(b), got, sum)
	}

	// The button itself, clicked in bob's browser, saves the same bytes.
	if got := sha256.Sum256(bob.clickDownload()); hex.EncodeToString(got[:]) != sum {
		bob.fatalf("the browser's download has SHA-256 %x, want %s", got, sum)
	}

	// 5. alice owns it no more: no Download button, 403 from the API.
	alice.open("/assets/"+id, `dd.owner`)
	if owner := alice.text(`document.querySelector('dd.owner').innerText`); owner != "bob" {
		alice.fatalf("alice's page shows owner %q", owner)
	}
	if alice.text(`String(!!document.querySelector('#download') || !!document.querySelector('#listing'))`) != "false" {
		alice.fatalf("alice still sees a Download button or a Sell form")
	}
	if resp, body := getDownload(t, base+"/v1/assets/"+id+"/download", marketAliceTok, nil); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Location") != "" || !strings.Contains(body, "not_owner") {
		t.Fatalf("alice's download with her token: %d %s", resp.StatusCode, body)
	}
	if resp, body := getDownload(t, base+"/v1/assets/"+id+"/download", "", alice.cookie()); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("alice's download with her console session: %d %s", resp.StatusCode, body)
	}

	// Each sees their own balance under "My balance": 10 - 5 + 7 and 10 - 7.
	for p, want := range map[*marketPage]string{alice: "alice: 12 credits", bob: "bob: 3 credits"} {
		p.open("/accounts", `p.balance`)
		if got := p.text(`document.querySelector('p.balance').innerText`); got != want {
			p.fatalf("My balance: %q, want %q", got, want)
		}
	}

	// 6. The preview: an <img> from the bucket's origin, which the CSP
	// allows for images and is the only other origin it allows.
	for _, p := range []*marketPage{alice, bob} {
		ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
		r, err := chromedp.Run(ctx, chromedp.NavigateResponse(base+"/assets/"+id))
		cancel()
		if err != nil || r.Status != http.StatusOK {
			p.fatalf("open the asset page: %v", err)
		}
		csp := ""
		for k, v := range r.Headers {
			if strings.EqualFold(k, "Content-Security-Policy") {
				csp, _ = v.(string)
			}
		}
		p.until("the preview loads", `(() => { const i = document.querySelector('p.preview img'); return !!i && i.complete && i.naturalWidth === `+itoa(previewW)+` && i.naturalHeight === `+itoa(previewH)+`; })()`, 10*time.Second)
		src := p.text(`document.querySelector('p.preview img').src`)
		origin := originOf(src)
		if origin == "" || origin != originOf(e.s3.Endpoint()) || origin == base {
			p.fatalf("the preview comes from %q (src %q), want the bucket's origin %s", origin, src, originOf(e.s3.Endpoint()))
		}
		var imgSrc []string
		for _, d := range strings.Split(csp, ";") {
			if f := strings.Fields(d); len(f) > 0 && f[0] == "img-src" {
				imgSrc = f[1:]
			}
		}
		var others []string
		for _, s := range imgSrc {
			if s != "'self'" && s != "data:" {
				others = append(others, s)
			}
		}
		if !slices.Equal(others, []string{origin}) || !slices.Contains(imgSrc, "'self'") {
			p.fatalf("Content-Security-Policy %q: img-src allows %q besides 'self' and data:, want exactly %s", csp, others, origin)
		}
		if !strings.Contains(csp, "default-src 'self'") {
			p.fatalf("Content-Security-Policy %q lost default-src 'self'", csp)
		}
	}
	bob.shot("bob-preview")
}
