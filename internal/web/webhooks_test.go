package web

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/webhook"
)

// fakeHooks stands in for the worker's WebhookAdmin.
type fakeHooks struct {
	endpoints  []webhook.Endpoint
	deliveries []webhook.DeliveryInfo
	mu         sync.Mutex
	resent     []string
}

func (f *fakeHooks) Endpoints() []webhook.Endpoint { return f.endpoints }

func (f *fakeHooks) Deliveries(_ context.Context, id string, max int) ([]webhook.DeliveryInfo, error) {
	if id != f.endpoints[0].ID {
		return nil, nil
	}
	return f.deliveries, nil
}

func (f *fakeHooks) Resend(_ context.Context, id, eventID string) (string, error) {
	if eventID == "9-9" {
		return "", errors.New("no such event: 9-9")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resent = append(f.resent, id+" "+eventID)
	return "webhook-" + eventID + "-" + id + "-resend-x", nil
}

func (f *fakeHooks) resends() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.resent...)
}

const (
	hookAdminTok = "hooks-admin-0123456789"
	hookReadTok  = "hooks-read-01234567890"
	hookBoundTok = "hooks-alice-0123456789"
	hookIngTok   = "hooks-ingest-012345678"
)

// TestWebhookPages: the endpoints and each one's deliveries are shown to
// operators (unbound read tokens and admin), not to a login bound to an
// account (every account's events pass there); resending is admin's, by a
// POST form that cross-origin protection guards like the console's other
// forms; the URL's query (which may carry a token) is never shown.
func TestWebhookPages(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("read "+hookReadTok+"\nread@alice "+hookBoundTok+"\ningest "+hookIngTok+"\n"), 0o600)
	tokens, err := api.LoadTokens(hookAdminTok, file)
	if err != nil {
		t.Fatal(err)
	}
	s := api.New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	sessions := api.NewSessions(rdb, "t:")
	s.SetSessions(sessions)
	secret := webhook.SecretPrefix + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	eps, err := webhook.Parse(strings.NewReader("https://hooks.example.com/in?token=sekrit "+secret+"\nhttps://crm.example.com/x "+secret+" purchase.succeeded\n"), "f", webhook.Options{})
	if err != nil {
		t.Fatal(err)
	}
	evil := `<script>alert(1)</script>`
	hooks := &fakeHooks{endpoints: eps, deliveries: []webhook.DeliveryInfo{
		{TaskID: "webhook-1-0-" + eps[0].ID, EventID: "1-0", EventType: "credits.granted", State: "completed", Attempts: 1, At: time.Now()},
		{TaskID: "webhook-2-0-" + eps[0].ID, EventID: "2-0", EventType: "asset.recorded", State: "archived", Attempts: 1, LastError: "answered 410 Gone (" + evil + ")", At: time.Now()},
	}}
	if _, err := Register(Deps{Server: s, Sessions: sessions, Inspector: asynq.NewInspectorFromRedisClient(rdb), Webhooks: hooks}); err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	do := func(method, path, tok, cookie string, form url.Values, hdr map[string]string) *httptest.ResponseRecorder {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req := httptest.NewRequest(method, path, body)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: api.SessionCookie, Value: cookie})
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, tt := range []struct {
		path, tok string
		status    int
		has, not  []string
	}{
		{"/webhooks", hookReadTok, 200, []string{"https://hooks.example.com/in?…", "https://crm.example.com/x", "purchase.succeeded", `href="/webhooks/2"`}, []string{"sekrit", "0123456789abcdef"}},
		{"/webhooks/1", hookReadTok, 200, []string{"1-0", "delivered", "failed", "answered 410 Gone", "&lt;script&gt;"}, []string{"sekrit", evil, "Resend"}},
		{"/webhooks/1", hookAdminTok, 200, []string{`action="/webhooks/1/resend"`, `name="event" value="2-0"`, "Send an event again"}, []string{"sekrit", evil}},
		{"/webhooks/2", hookReadTok, 200, []string{"No deliveries yet"}, nil},
		{"/webhooks/3", hookReadTok, 404, []string{"numbered 1 to 2"}, nil},
		{"/webhooks/x", hookReadTok, 404, nil, nil},
		{"/webhooks", hookBoundTok, 403, []string{"the webhook pages show every account"}, []string{"hooks.example.com"}},
		{"/webhooks/1", hookBoundTok, 403, nil, []string{"hooks.example.com"}},
		{"/webhooks", hookIngTok, 403, nil, []string{"hooks.example.com"}},
	} {
		rec := do(http.MethodGet, tt.path, tt.tok, "", nil, nil)
		body := rec.Body.String()
		if rec.Code != tt.status {
			t.Errorf("GET %s as %s: %d, want %d\n%s", tt.path, tt.tok[:10], rec.Code, tt.status, body)
			continue
		}
		for _, s := range tt.has {
			if !strings.Contains(body, s) {
				t.Errorf("GET %s as %s: no %q", tt.path, tt.tok[:10], s)
			}
		}
		for _, s := range tt.not {
			if strings.Contains(body, s) {
				t.Errorf("GET %s as %s shows %q", tt.path, tt.tok[:10], s)
			}
		}
	}
	form := url.Values{"event": {"2-0"}}
	if rec := do(http.MethodPost, "/webhooks/1/resend", hookReadTok, "", form, nil); rec.Code != http.StatusForbidden {
		t.Fatalf("resend as read: %d", rec.Code)
	}
	rec := do(http.MethodPost, "/webhooks/1/resend", hookAdminTok, "", form, nil)
	if rec.Code != http.StatusSeeOther || !strings.Contains(rec.Header().Get("Location"), "/webhooks/1?flash=") {
		t.Fatalf("resend as admin: %d %v", rec.Code, rec.Header())
	}
	if rec := do(http.MethodPost, "/webhooks/1/resend", hookAdminTok, "", url.Values{"event": {"9-9"}}, nil); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "no such event") {
		t.Fatalf("resend of an unknown event: %d %s", rec.Code, rec.Body)
	}
	// A console login's resend from dab's own page works; the same form
	// posted from another site is refused before it does anything.
	req := httptest.NewRequest(http.MethodPost, "/login", nil)
	caller, err := s.Authenticate(req, hookAdminTok)
	if err != nil {
		t.Fatal(err)
	}
	session, err := sessions.Create(context.Background(), caller)
	if err != nil {
		t.Fatal(err)
	}
	if rec := do(http.MethodPost, "/webhooks/1/resend", "", session, form, map[string]string{"Sec-Fetch-Site": "same-origin"}); rec.Code != http.StatusSeeOther {
		t.Fatalf("resend from the console: %d %s", rec.Code, rec.Body)
	}
	for _, hdr := range []map[string]string{{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}} {
		if rec := do(http.MethodPost, "/webhooks/1/resend", "", session, form, hdr); rec.Code != http.StatusForbidden {
			t.Fatalf("a cross-origin resend (%v): %d", hdr, rec.Code)
		}
	}
	if got := hooks.resends(); len(got) != 2 || got[0] != eps[0].ID+" 2-0" {
		t.Fatalf("resends %v, want two of event 2-0 to endpoint 1", got)
	}
}
