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
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
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
