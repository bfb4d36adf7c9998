// Package web is dab's console: server-rendered pages (html/template, so
// every name is escaped) with embedded static files, usable without
// JavaScript. It covers what the original app's UI did (assets, upload,
// purchase) and more: accounts and grants, the CYOA story graphs, and a
// status strip with the queues and links to the monitor.
package web

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/plugin/cyoa"
	"github.com/dab-assets/dab/internal/storygraph"
	"github.com/dab-assets/dab/internal/webhook"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Uploader takes an upload form (the HTTP intake).
type Uploader interface {
	ReceiveForm(w http.ResponseWriter, r *http.Request) (api.Accepted, error)
}

// Purchaser records and queues a purchase (the HTTP intake).
type Purchaser interface {
	Submit(ctx context.Context, req ledger.PurchaseRequest) (ledger.PurchaseResult, error)
}

// Webhooks is what the console shows and does for webhooks (the worker's
// WebhookAdmin).
type Webhooks interface {
	// Endpoints lists the endpoints in the file's order.
	Endpoints() []webhook.Endpoint
	// Deliveries lists an endpoint's newest deliveries, newest first.
	Deliveries(ctx context.Context, endpointID string, max int) ([]webhook.DeliveryInfo, error)
	// Resend queues an event's delivery to an endpoint again; it returns
	// the new task's ID.
	Resend(ctx context.Context, endpointID, eventID string) (string, error)
}

// Deps are what the console shows and does.
type Deps struct {
	Server    *api.Server
	Sessions  *api.Sessions
	Assets    *asset.Store
	Ledger    *ledger.Store
	Inspector *asynq.Inspector
	// Queues are shown in the status strip; nil means every queue.
	Queues    []string
	Checks    map[string]func(context.Context) error
	Types     []string
	Uploader  Uploader
	Purchaser Purchaser
	// Monitor is true when the Asynq monitor is mounted at /monitoring/.
	Monitor bool
	// Problems, when set, lists drop-folder problems that need a person
	// (shown in the status strip).
	Problems func() []Problem
	Logger   *slog.Logger
	// Downloads hands out presigned URLs for the owner's download and the
	// image previews (nil: no bucket, neither is shown).
	Downloads *api.Downloads
	// Bucket is where uploads go: an upload's asset ID is known from it and
	// the key before the worker records it (asset.ID).
	Bucket string
	// Webhooks, when set, shows the webhook endpoints and their
	// deliveries (nil: the pages say none are configured).
	Webhooks Webhooks
}

// Console serves the pages.
type Console struct {
	d      Deps
	pages  map[string]*template.Template
	graphs storygraph.Renderer
}

// Register adds the console's pages to d.Server.
func Register(d Deps) (*Console, error) {
	c := &Console{d: d, pages: map[string]*template.Template{}}
	funcs := template.FuncMap{
		"bytes": func(n int64) string {
			switch {
			case n >= 1<<30:
				return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
			case n >= 1<<20:
				return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
			case n >= 1<<10:
				return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
			}
			return fmt.Sprintf("%d B", n)
		},
		"time": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		// when shows an RFC 3339 time (as the ledger stores them) to the
		// second; anything else as it is.
		"when": func(s string) string {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return s
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"path":  url.PathEscape,
		"query": url.QueryEscape,
		"svg":   func(s string) template.HTML { return template.HTML(s) }, // built by storygraph: Graphviz escapes every text, the links are ours
		// plural picks the word for a count n (an int, int64 or *int64): 1 credit, 2 credits.
		"plural": func(n any, one, many string) string {
			if v := reflect.Indirect(reflect.ValueOf(n)); v.CanInt() && v.Int() == 1 {
				return one
			}
			return many
		},
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", n, err)
		}
		c.pages[base] = t
	}
	s := d.Server
	page := api.Page()
	static, _ := fs.Sub(staticFS, "static")
	s.Handle(http.MethodGet, "/static/", api.ScopePublic, http.StripPrefix("/static/", filesOnly(static)), page)
	s.HandleFunc(http.MethodGet, "/{$}", api.ScopePublic, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/assets", http.StatusSeeOther)
	}, page)
	s.Handle(http.MethodGet, "/login", api.ScopePublic, s.Optional(http.HandlerFunc(c.loginPage)), page)
	s.HandleFunc(http.MethodPost, "/login", api.ScopePublic, c.login, page)
	s.HandleFunc(http.MethodPost, "/logout", api.ScopePublic, c.logout, page)
	s.HandleFunc(http.MethodGet, "/assets", api.ScopeRead, c.assets, page)
	s.HandleFunc(http.MethodGet, "/assets/{id}", api.ScopeRead, c.assetPage, page)
	s.HandleFunc(http.MethodPost, "/assets/{id}/buy", api.ScopePurchase+","+api.ScopeBroker, c.buy, page)
	s.HandleFunc(http.MethodPost, "/assets/{id}/listing", api.ScopePurchase, c.listing, page)
	s.HandleFunc(http.MethodGet, "/upload", api.ScopeIngest, c.uploadPage, page)
	s.HandleFunc(http.MethodPost, "/upload", api.ScopeIngest, c.upload, page, api.Streaming())
	s.HandleFunc(http.MethodGet, "/purchases/{id}", api.ScopeRead+","+api.ScopePurchase+","+api.ScopeBroker, c.purchasePage, page)
	s.HandleFunc(http.MethodGet, "/accounts", api.ScopeRead+","+api.ScopePurchase+","+api.ScopeBroker, c.accountPage, page)
	// The address people type: /accounts/alice is /accounts?id=alice.
	s.HandleFunc(http.MethodGet, "/accounts/{id}", api.ScopeRead+","+api.ScopePurchase+","+api.ScopeBroker, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/accounts?id="+url.QueryEscape(r.PathValue("id")), http.StatusSeeOther)
	}, page)
	s.HandleFunc(http.MethodPost, "/accounts/{id}/grant", api.ScopeAdmin, c.grant, page)
	s.HandleFunc(http.MethodGet, "/stories", api.ScopeRead, c.storiesPage, page)
	s.HandleFunc(http.MethodGet, "/stories/{story}", api.ScopeRead, c.storyPage, page)
	s.HandleFunc(http.MethodGet, "/problems", api.ScopeRead, c.problemsPage, page)
	s.HandleFunc(http.MethodGet, "/v1/cyoa/stories/{story}/graph", api.ScopeRead, c.storyJSON)
	// Webhooks: operators' pages (every account's events pass there);
	// sending again is admin's, by a form like the others (a POST that
	// cross-origin protection and SameSite=Strict guard).
	s.HandleFunc(http.MethodGet, "/webhooks", api.ScopeRead, c.webhooksPage, page)
	s.HandleFunc(http.MethodGet, "/webhooks/{n}", api.ScopeRead, c.webhookPage, page)
	s.HandleFunc(http.MethodPost, "/webhooks/{n}/resend", api.ScopeAdmin, c.resend, page)
	// Browsers that are refused get the login page, not JSON.
	s.Deny = c.deny
	return c, nil
}

// filesOnly serves the files of fsys and answers 404 for its folders:
// http.FileServer would list them, and a listing shows what the console
// does not link to.
func filesOnly(fsys fs.FS) http.Handler {
	files := http.FileServer(http.FS(fsys))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if fi, err := fs.Stat(fsys, name); name == "" || err != nil || fi.IsDir() || strings.HasSuffix(r.URL.Path, "/") {
			api.WriteError(w, http.StatusNotFound, "not_found", "no such file: /static/"+r.URL.Path)
			return
		}
		files.ServeHTTP(w, r)
	})
}

// view is what every page template gets.
type view struct {
	Title    string
	Caller   api.Caller
	LoggedIn bool
	Status   status
	Monitor  bool
	Flash    string
	Error    string
	Data     any
}

type queueStatus struct {
	Name                                              string
	Size, Active, Pending, Retry, Archived, Completed int
	LastError                                         string
}

type status struct {
	Queues   []queueStatus
	Checks   map[string]string
	Ready    bool
	Problems []Problem
}

// Problem is a condition in the drop folder that needs a person.
type Problem struct {
	Path, Message string
}

func (c *Console) status(ctx context.Context, caller api.Caller) status {
	st := status{Checks: map[string]string{}, Ready: true}
	queues := c.d.Queues
	if queues == nil {
		queues, _ = c.d.Inspector.Queues()
		sort.Strings(queues)
	}
	for _, q := range queues {
		qs := queueStatus{Name: q}
		if info, err := c.d.Inspector.GetQueueInfo(q); err == nil {
			qs.Size, qs.Active, qs.Pending, qs.Retry, qs.Archived, qs.Completed = info.Size, info.Active, info.Pending, info.Retry, info.Archived, info.Completed
		}
		if tasks, err := c.d.Inspector.ListArchivedTasks(q, asynq.PageSize(1)); err == nil && len(tasks) > 0 {
			if caller.Account == "" { // another account's failure is not a bound login's to read
				qs.LastError = tasks[0].LastErr
			}
		}
		st.Queues = append(st.Queues, qs)
	}
	if c.d.Problems != nil {
		st.Problems = c.d.Problems()
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for name, check := range c.d.Checks {
		if err := check(cctx); err != nil {
			st.Checks[name], st.Ready = err.Error(), false
		} else {
			st.Checks[name] = "ok"
		}
	}
	return st
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any, errMsg string) {
	caller, ok := api.CallerOf(r.Context())
	v := view{Title: title, Caller: caller, LoggedIn: ok, Monitor: c.d.Monitor, Data: data, Error: errMsg, Flash: r.URL.Query().Get("flash")}
	if ok {
		v.Status = c.status(r.Context(), caller)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// Image previews are presigned URLs of the bucket: its origin, and no
	// other, may serve images.
	imgSrc := "'self' data:"
	if o := c.d.Downloads.Origin(); o != "" {
		imgSrc += " " + o
	}
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src "+imgSrc+"; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if err := c.pages[name].Execute(w, v); err != nil && c.d.Logger != nil {
		c.d.Logger.Error("web.render", "page", name, "error", err.Error())
	}
}

// deny answers refused page requests: 401 goes to the login page, 403 says
// which scope is missing. API and monitor API requests keep JSON answers.
func (c *Console) deny(w http.ResponseWriter, r *http.Request, status int, message string) bool {
	if strings.HasPrefix(r.URL.Path, "/v1/") || strings.HasPrefix(r.URL.Path, "/monitoring/api/") || strings.HasPrefix(r.URL.Path, "/metrics") {
		return false
	}
	if status == http.StatusUnauthorized {
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return true
	}
	title := "Not allowed"
	if status == http.StatusServiceUnavailable {
		title = "Unavailable"
	}
	c.render(w, r, status, "message", title, nil, message)
	return true
}

// formMax bounds the body of the console's forms (a token, a few fields):
// net/http alone would read 10 MB before refusing one.
const formMax = 64 << 10

// parseForm reads a form of at most formMax bytes.
func (c *Console) parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, formMax)
	if err := r.ParseForm(); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return fmt.Errorf("%w: a form of this console is at most %d KiB", err, formMax>>10)
		}
		return err
	}
	return nil
}

// formStatus is the answer to a form parseForm refused.
func formStatus(err error) int {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

func newKey() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "web-" + hex.EncodeToString(b)
}

// --- login ---

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "login", "Log in", map[string]string{"Next": safeNext(r.URL.Query().Get("next"))}, "")
}

// safeNext keeps redirects on this site.
func safeNext(n string) string {
	// Browsers drop tabs and newlines from URLs ("/\t/evil.example" becomes
	// "//evil.example"): any control or space character is refused too.
	if !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.Contains(n, `\`) ||
		strings.ContainsFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f || unicode.IsSpace(r) }) {
		return "/assets"
	}
	return n
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if err := c.parseForm(w, r); err != nil {
		c.render(w, r, formStatus(err), "login", "Log in", map[string]string{"Next": "/assets"}, "the form was malformed or too large")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	caller, err := c.d.Server.Authenticate(r, strings.TrimSpace(r.PostForm.Get("token")))
	var throttled *api.ThrottledError
	switch {
	case errors.As(err, &throttled):
		throttled.SetRetryAfter(w.Header())
		c.render(w, r, http.StatusTooManyRequests, "login", "Log in", map[string]string{"Next": next}, throttled.Error())
		return
	case err != nil:
		c.render(w, r, http.StatusUnauthorized, "login", "Log in", map[string]string{"Next": next}, "that token is not valid")
		return
	}
	id, err := c.d.Sessions.Create(r.Context(), caller)
	if err != nil {
		c.render(w, r, http.StatusServiceUnavailable, "login", "Log in", map[string]string{"Next": next}, "cannot start a session: Redis does not answer ("+err.Error()+"); try again once it is back (dab dev restarts its redis-server by itself)")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: api.SessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(c.d.Sessions.TTL / time.Second)})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(api.SessionCookie); err == nil {
		c.d.Sessions.Delete(r.Context(), ck.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: api.SessionCookie, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// --- assets ---

type assetsData struct {
	Records           []asset.Record
	Type, Owner, Name string
	Types             []string
	Next              string
}

func (c *Console) assets(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := assetsData{Type: q.Get("type"), Owner: strings.TrimSpace(q.Get("owner")), Name: strings.TrimSpace(q.Get("name")), Types: c.d.Types}
	cursor := q.Get("cursor")
	// Owner and name filter the pages of the index; stop after a bounded scan.
	for scanned := 0; len(d.Records) < 50 && scanned < 20; scanned++ {
		page, err := c.d.Assets.List(r.Context(), asset.ListOptions{Type: d.Type, Cursor: cursor, Limit: 200})
		if err != nil {
			c.render(w, r, http.StatusBadRequest, "assets", "Assets", d, err.Error())
			return
		}
		for _, rec := range page.Records {
			if d.Owner != "" && rec.Owner != d.Owner {
				continue
			}
			if d.Name != "" && !strings.Contains(strings.ToLower(rec.Name), strings.ToLower(d.Name)) {
				continue
			}
			d.Records = append(d.Records, rec)
		}
		cursor = page.Next
		if cursor == "" {
			break
		}
	}
	d.Next = cursor
	c.render(w, r, http.StatusOK, "assets", "Assets", d, "")
}

type assetData struct {
	Rec    asset.Record
	Meta   [][2]string
	Key    string
	Story  string
	CanBuy bool
	// BuyAs is the account a bound login buys as (no buyer field then).
	BuyAs string
	// CanDownload shows the download button (owner or admin).
	CanDownload bool
	// Preview is a presigned URL of an image, shown inline.
	Preview string
	// CanList shows the owner's listing form.
	CanList bool
	// Sales are the asset's sales, oldest first.
	Sales []ledger.Sale
}

func (c *Console) assetPage(w http.ResponseWriter, r *http.Request) {
	rec, err := c.d.Assets.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, asset.ErrNotFound) {
		c.render(w, r, http.StatusNotFound, "message", "Not found", nil, "no asset "+r.PathValue("id"))
		return
	}
	if err != nil {
		c.render(w, r, http.StatusServiceUnavailable, "message", "Unavailable", nil, err.Error())
		return
	}
	d := assetData{Rec: rec, Key: newKey()}
	for k, v := range rec.Metadata {
		d.Meta = append(d.Meta, [2]string{k, v})
	}
	sort.Slice(d.Meta, func(i, j int) bool { return d.Meta[i][0] < d.Meta[j][0] })
	if rec.Type == "cyoa" {
		d.Story = rec.Metadata["story"]
	}
	caller, _ := api.CallerOf(r.Context())
	forSale := rec.Owner == "" && rec.Price != nil || rec.Owner != "" && rec.Listing != nil
	ownIt := caller.Account != "" && rec.Owner == caller.Account
	d.CanBuy = caller.Has(api.ScopePurchase+","+api.ScopeBroker) && forSale && !ownIt
	d.BuyAs = caller.Account
	d.CanDownload = caller.MayDownload(rec.Owner) && c.d.Downloads != nil
	d.CanList = rec.Owner != "" && caller.ActsFor(rec.Owner) && caller.Has(api.ScopePurchase)
	if sales, err := c.d.Ledger.Sales(r.Context(), rec.ID); err == nil {
		d.Sales = sales
	}
	if u, err := c.d.Downloads.PreviewURL(r.Context(), rec); err == nil {
		d.Preview = u
	}
	c.render(w, r, http.StatusOK, "asset", rec.Name, d, "")
}

// --- upload ---

func (c *Console) uploadPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "upload", "Upload", map[string]any{"Types": c.uploadTypes()}, "")
}

// uploadTypes lists the types with generic first: the form's default, as
// `dab upload`'s.
func (c *Console) uploadTypes() []string {
	out := make([]string, 0, len(c.d.Types))
	for _, t := range c.d.Types {
		if t == "generic" {
			out = append([]string{t}, out...)
		} else {
			out = append(out, t)
		}
	}
	return out
}

func (c *Console) upload(w http.ResponseWriter, r *http.Request) {
	acc, err := c.d.Uploader.ReceiveForm(w, r)
	if err != nil {
		status := http.StatusBadRequest
		var se interface{ Status() int }
		if errors.As(err, &se) {
			status = se.Status()
		}
		c.render(w, r, status, "upload", "Upload", map[string]any{"Types": c.uploadTypes()}, err.Error())
		return
	}
	c.render(w, r, http.StatusAccepted, "uploaded", "Uploaded", map[string]any{"Upload": acc, "AssetID": asset.ID(c.d.Bucket, acc.Key)}, "")
}

// --- purchases ---

func (c *Console) buy(w http.ResponseWriter, r *http.Request) {
	if err := c.parseForm(w, r); err != nil {
		c.render(w, r, formStatus(err), "message", "Bad form", nil, err.Error())
		return
	}
	credits, err := strconv.ParseInt(strings.TrimSpace(r.PostForm.Get("credits")), 10, 64)
	if err != nil {
		c.render(w, r, http.StatusBadRequest, "message", "Bad form", nil, "credits must be a whole number")
		return
	}
	caller, _ := api.CallerOf(r.Context())
	buyer, err := caller.Buyer(strings.TrimSpace(r.PostForm.Get("buyer")))
	if err != nil {
		status := http.StatusForbidden
		if errors.Is(err, api.ErrBuyerRequired) {
			status = http.StatusBadRequest
		}
		c.render(w, r, status, "message", "Purchase refused", nil, err.Error())
		return
	}
	req := ledger.PurchaseRequest{PurchaseID: r.PostForm.Get("key"), AssetID: r.PathValue("id"), BuyerID: buyer, Credits: credits}
	if _, err := c.d.Purchaser.Submit(r.Context(), req); err != nil {
		status := http.StatusServiceUnavailable
		switch {
		case errors.Is(err, ledger.ErrInvalid):
			status = http.StatusBadRequest
		case errors.Is(err, ledger.ErrConflict):
			// The stored purchase may be another account's: say nothing of it.
			c.render(w, r, http.StatusConflict, "message", "Purchase refused", nil,
				"this purchase ID was used for another purchase: reload the asset page for a new one")
			return
		}
		c.render(w, r, status, "message", "Purchase refused", nil, err.Error())
		return
	}
	http.Redirect(w, r, "/purchases/"+url.PathEscape(req.PurchaseID), http.StatusSeeOther)
}

// listing puts the owner's asset up for sale (credits) or takes it off
// (remove), with the same rules as the API: the owner's bound login, or
// admin for any owner.
func (c *Console) listing(w http.ResponseWriter, r *http.Request) {
	if err := c.parseForm(w, r); err != nil {
		c.render(w, r, formStatus(err), "message", "Bad form", nil, err.Error())
		return
	}
	caller, _ := api.CallerOf(r.Context())
	owner := caller.Account
	if caller.Has(api.ScopeAdmin) {
		owner = ledger.AnyOwner
	}
	by := caller.Account
	if by == "" {
		by = caller.Name
	}
	id := r.PathValue("id")
	var err error
	flash := "not for sale any more"
	if r.PostForm.Get("remove") != "" {
		_, err = c.d.Ledger.ClearListing(r.Context(), id, owner, by)
	} else {
		var n int64
		if n, err = asset.ParsePrice(strings.TrimSpace(r.PostForm.Get("credits"))); err == nil {
			_, err = c.d.Ledger.SetListing(r.Context(), id, owner, n, by)
			flash = fmt.Sprintf("listed for %d %s", n, pluralCredits(n))
		}
	}
	if err != nil {
		status := http.StatusServiceUnavailable
		switch {
		case errors.Is(err, asset.ErrBadPrice), errors.Is(err, ledger.ErrInvalid):
			status = http.StatusBadRequest
		case errors.Is(err, ledger.ErrNotOwner):
			status = http.StatusForbidden
		case errors.Is(err, ledger.ErrNotOwned):
			status = http.StatusConflict
		case errors.Is(err, ledger.ErrNotFound):
			status = http.StatusNotFound
		}
		c.render(w, r, status, "message", "Listing refused", nil, err.Error())
		return
	}
	http.Redirect(w, r, "/assets/"+url.PathEscape(id)+"?flash="+url.QueryEscape(flash), http.StatusSeeOther)
}

func (c *Console) purchasePage(w http.ResponseWriter, r *http.Request) {
	p, err := c.d.Ledger.GetPurchase(r.Context(), r.PathValue("id"))
	caller, _ := api.CallerOf(r.Context())
	if err == nil && caller.Account != "" && p.BuyerID != caller.Account {
		err = fmt.Errorf("no purchase %q of yours", r.PathValue("id")) // others' purchases are not shown, nor said to exist
	}
	if err != nil {
		c.render(w, r, http.StatusNotFound, "message", "Not found", nil, err.Error())
		return
	}
	if p.Status == ledger.StatusPending {
		w.Header().Set("Refresh", "1") // no JavaScript needed to see the result
	}
	d := map[string]any{"P": p, "AssetName": p.AssetID}
	if rec, err := c.d.Assets.Get(r.Context(), p.AssetID); err == nil {
		d["AssetName"] = rec.Name
	}
	if p.Status == ledger.StatusSucceeded {
		if a, err := c.d.Ledger.Account(r.Context(), p.BuyerID, 0); err == nil {
			d["Balance"] = a.Balance
		}
	}
	c.render(w, r, http.StatusOK, "purchase", "Purchase "+p.PurchaseID, d, "")
}

// --- accounts ---

// accountsShown is the most accounts the accounts page lists.
const accountsShown = 500

func (c *Console) accountPage(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimSpace(r.URL.Query().Get("id"))
	caller, _ := api.CallerOf(r.Context())
	if caller.Account != "" && id == "" {
		id = caller.Account // "my balance"
	}
	data := map[string]any{"ID": id, "Key": newKey(), "Mine": caller.Account != ""}
	if caller.Account != "" && id != caller.Account {
		c.render(w, r, http.StatusForbidden, "account", "Accounts", data, "this login acts for account "+caller.Account+" and sees only its balance")
		return
	}
	if id != "" {
		a, err := c.d.Ledger.Account(r.Context(), id, 50)
		if err != nil {
			c.render(w, r, http.StatusBadRequest, "account", "Accounts", data, err.Error())
			return
		}
		data["Account"] = a
	}
	data["CanGrant"] = caller.Has(api.ScopeAdmin)
	if caller.Account == "" {
		// Operators see who has credits; a bound login only its own.
		list, more, err := c.d.Ledger.Balances(r.Context(), accountsShown)
		if err != nil {
			c.render(w, r, http.StatusServiceUnavailable, "account", "Accounts", data, err.Error())
			return
		}
		data["Accounts"], data["More"] = list, more
	}
	c.render(w, r, http.StatusOK, "account", "Accounts", data, "")
}

func (c *Console) grant(w http.ResponseWriter, r *http.Request) {
	if err := c.parseForm(w, r); err != nil {
		c.render(w, r, formStatus(err), "message", "Bad form", nil, err.Error())
		return
	}
	id := r.PathValue("id")
	n, err := strconv.ParseInt(strings.TrimSpace(r.PostForm.Get("credits")), 10, 64)
	if err == nil {
		_, err = c.d.Ledger.Grant(r.Context(), r.PostForm.Get("key"), id, n)
	}
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, ledger.ErrIssuanceLimit) {
			status = http.StatusUnprocessableEntity
		}
		c.render(w, r, status, "message", "Grant refused", nil, err.Error())
		return
	}
	http.Redirect(w, r, "/accounts?id="+url.QueryEscape(id)+"&flash="+url.QueryEscape(fmt.Sprintf("granted %d %s", n, pluralCredits(n))), http.StatusSeeOther)
}

// --- stories ---

// stories groups the cyoa records by story.
func (c *Console) stories(ctx context.Context) (map[string][]cyoa.Part, error) {
	out := map[string][]cyoa.Part{}
	cursor := ""
	for range 500 { // up to 500,000 records
		page, err := c.d.Assets.List(ctx, asset.ListOptions{Type: "cyoa", Cursor: cursor, Limit: 1000})
		if err != nil {
			return nil, err
		}
		for _, rec := range page.Records {
			story := rec.Metadata["story"]
			if story == "" {
				story = cyoa.Story(rec.Path)
			}
			out[story] = append(out[story], cyoa.Part{AssetID: rec.ID, Key: rec.S3Key, Name: rec.Name, Info: cyoa.Parse(rec.Name)})
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	return out, nil
}

func (c *Console) storiesPage(w http.ResponseWriter, r *http.Request) {
	all, err := c.stories(r.Context())
	if err != nil {
		c.render(w, r, http.StatusServiceUnavailable, "message", "Unavailable", nil, err.Error())
		return
	}
	type row struct {
		Name            string
		Files, Problems int
	}
	var rows []row
	for name, parts := range all {
		g := cyoa.BuildGraph(name, parts)
		g.CheckEnds(func(story string) bool { _, ok := all[story]; return ok })
		rows = append(rows, row{Name: name, Files: len(parts), Problems: len(g.Problems) + len(g.Invalid) + len(g.Unknown)})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	c.render(w, r, http.StatusOK, "stories", "Stories", rows, "")
}

func (c *Console) graph(r *http.Request) (cyoa.Graph, bool, error) {
	all, err := c.stories(r.Context())
	if err != nil {
		return cyoa.Graph{}, false, err
	}
	parts, ok := all[r.PathValue("story")]
	g := cyoa.BuildGraph(r.PathValue("story"), parts)
	g.CheckEnds(func(story string) bool { _, ok := all[story]; return ok })
	return g, ok, nil
}

func (c *Console) storyPage(w http.ResponseWriter, r *http.Request) {
	g, ok, err := c.graph(r)
	if err != nil {
		c.render(w, r, http.StatusServiceUnavailable, "message", "Unavailable", nil, err.Error())
		return
	}
	if !ok {
		c.render(w, r, http.StatusNotFound, "message", "Not found", nil, "no story "+r.PathValue("story"))
		return
	}
	svg, err := c.graphs.SVG(r.Context(), g, storygraph.Links{
		Asset: func(id string) string { return "/assets/" + url.PathEscape(id) },
		Story: func(s string) string { return "/stories/" + url.PathEscape(s) },
	})
	if err != nil {
		c.render(w, r, http.StatusInternalServerError, "message", "Cannot draw the story", nil, err.Error()+": the story's JSON is at /v1/cyoa/stories/"+url.PathEscape(g.Story)+"/graph")
		return
	}
	c.render(w, r, http.StatusOK, "story", "Story "+g.Story, map[string]any{"Graph": g, "SVG": svg}, "")
}

func (c *Console) storyJSON(w http.ResponseWriter, r *http.Request) {
	g, ok, err := c.graph(r)
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	if !ok {
		api.WriteError(w, http.StatusNotFound, "story_not_found", "no cyoa assets in story "+strconv.Quote(r.PathValue("story")))
		return
	}
	api.WriteJSON(w, http.StatusOK, g)
}

// --- problems ---

// problemsPage lists the drop folder's problems that need a person; the
// status strip shows only their count, with a link here.
func (c *Console) problemsPage(w http.ResponseWriter, r *http.Request) {
	var list []Problem
	if c.d.Problems != nil {
		list = c.d.Problems()
	}
	c.render(w, r, http.StatusOK, "problems", "Problems", list, "")
}

// pluralCredits is "credit" for 1, else "credits".
func pluralCredits(n int64) string {
	if n == 1 {
		return "credit"
	}
	return "credits"
}

// --- webhooks ---

// endpoints is the configured webhook endpoints (none without Webhooks).
func (c *Console) endpoints() []webhook.Endpoint {
	if c.d.Webhooks == nil {
		return nil
	}
	return c.d.Webhooks.Endpoints()
}

// operatorsOnly refuses a login bound to an account: the webhook pages
// show every account's events.
func (c *Console) operatorsOnly(w http.ResponseWriter, r *http.Request) bool {
	if caller, _ := api.CallerOf(r.Context()); caller.Account != "" {
		c.render(w, r, http.StatusForbidden, "message", "Not allowed", nil,
			"the webhook pages show every account's events: log in with an unbound read token (or admin); this login acts for "+caller.Account+" only")
		return false
	}
	return true
}

// deliveriesShown is how many deliveries an endpoint's page lists.
const deliveriesShown = 100

type endpointRow struct {
	Endpoint                    webhook.Endpoint
	Completed, Retrying, Failed int
	Waiting                     int
	LastError                   string
}

func (c *Console) webhooksPage(w http.ResponseWriter, r *http.Request) {
	if !c.operatorsOnly(w, r) {
		return
	}
	var rows []endpointRow
	for _, e := range c.endpoints() {
		row := endpointRow{Endpoint: e}
		ds, err := c.d.Webhooks.Deliveries(r.Context(), e.ID, 1000)
		if err != nil {
			c.render(w, r, http.StatusServiceUnavailable, "message", "Unavailable", nil, err.Error())
			return
		}
		for _, d := range ds {
			switch d.State {
			case "completed":
				row.Completed++
			case "retry":
				row.Retrying++
			case "archived":
				row.Failed++
			default:
				row.Waiting++
			}
			if row.LastError == "" && d.LastError != "" {
				row.LastError = d.LastError
			}
		}
		rows = append(rows, row)
	}
	c.render(w, r, http.StatusOK, "webhooks", "Webhooks", rows, "")
}

// endpointOf finds the endpoint of /webhooks/{n}, or answers 404.
func (c *Console) endpointOf(w http.ResponseWriter, r *http.Request) (webhook.Endpoint, bool) {
	eps := c.endpoints()
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 1 || n > len(eps) {
		c.render(w, r, http.StatusNotFound, "message", "Not found", nil,
			fmt.Sprintf("no webhook endpoint %q: endpoints are numbered 1 to %d in DAB_WEBHOOKS_FILE's order", r.PathValue("n"), len(eps)))
		return webhook.Endpoint{}, false
	}
	return eps[n-1], true
}

func (c *Console) webhookPage(w http.ResponseWriter, r *http.Request) {
	if !c.operatorsOnly(w, r) {
		return
	}
	e, ok := c.endpointOf(w, r)
	if !ok {
		return
	}
	ds, err := c.d.Webhooks.Deliveries(r.Context(), e.ID, deliveriesShown)
	if err != nil {
		c.render(w, r, http.StatusServiceUnavailable, "message", "Unavailable", nil, err.Error())
		return
	}
	caller, _ := api.CallerOf(r.Context())
	c.render(w, r, http.StatusOK, "webhook", fmt.Sprintf("Webhook endpoint %d", e.N),
		map[string]any{"Endpoint": e, "Deliveries": ds, "CanResend": caller.Has(api.ScopeAdmin)}, "")
}

func (c *Console) resend(w http.ResponseWriter, r *http.Request) {
	if err := c.parseForm(w, r); err != nil {
		c.render(w, r, formStatus(err), "message", "Bad form", nil, err.Error())
		return
	}
	e, ok := c.endpointOf(w, r)
	if !ok {
		return
	}
	eventID := strings.TrimSpace(r.PostForm.Get("event"))
	taskID, err := c.d.Webhooks.Resend(r.Context(), e.ID, eventID)
	if err != nil {
		c.render(w, r, http.StatusBadRequest, "message", "Not sent again", nil, err.Error())
		return
	}
	if c.d.Logger != nil {
		caller, _ := api.CallerOf(r.Context())
		c.d.Logger.Info("webhook.resend", "endpoint", e.N, "event_id", eventID, "task_id", taskID, "by", caller.Name)
	}
	http.Redirect(w, r, fmt.Sprintf("/webhooks/%d?flash=%s", e.N, url.QueryEscape("event "+eventID+" queued again as task "+taskID)), http.StatusSeeOther)
}
