package web

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
)

// TestMonitorBackLink: the monitor's HTML pages get the link back to the
// console before </body>, with a right Content-Length; its API, scripts and
// non-GET requests pass untouched.
func TestMonitorBackLink(t *testing.T) {
	t.Parallel()
	h := MonitorBackLink(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".js") || strings.Contains(r.URL.Path, "/api/") {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"x":"</body>"}`)
			return
		}
		if r.URL.Path == "/monitoring/" {
			w.Header().Set("Content-Type", "text/html; charset=utf-8") // the others are sniffed
		}
		w.Header().Set("Content-Length", "999")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "<html><body><div id=root></div></body></html>")
	}))
	for _, tc := range []struct {
		method, path string
		link         bool
	}{
		{"GET", "/monitoring/", true},
		{"GET", "/monitoring/queues/uploads", true},
		{"GET", "/monitoring/static/main.js", false},
		{"GET", "/monitoring/api/queues", false},
		{"POST", "/monitoring/api/queues/x:pause", false},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		body := rec.Body.String()
		if got := strings.Contains(body, "dab console"); got != tc.link {
			t.Errorf("%s %s: link %v, want %v: %s", tc.method, tc.path, got, tc.link, body)
		}
		if tc.link && (rec.Header().Get("Content-Length") != strconv.Itoa(len(body)) || !strings.HasSuffix(body, "</body></html>")) {
			t.Errorf("%s: length %s for %d bytes: %s", tc.path, rec.Header().Get("Content-Length"), len(body), body)
		}
	}
}

// TestMonitorPolicy: a monitor page (asynqmon's own, through its handler)
// carries a Content-Security-Policy that allows exactly its inline scripts
// by hash, and no other host: the Google fonts it asks for are refused.
func TestMonitorPolicy(t *testing.T) {
	t.Parallel()
	mon := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: asynq.RedisClientOpt{Addr: "127.0.0.1:1"}, ReadOnly: true})
	rec := httptest.NewRecorder()
	MonitorBackLink(mon).ServeHTTP(rec, httptest.NewRequest("GET", "/monitoring/", nil))
	page, policy := rec.Body.String(), rec.Header().Get("Content-Security-Policy")
	if rec.Code != http.StatusOK || !strings.Contains(page, "fonts.googleapis.com") {
		t.Fatalf("not asynqmon's page (it asks Google for fonts): %d %.300s", rec.Code, page)
	}
	var inline int
	for _, chunk := range strings.Split(page, "<script>")[1:] {
		script, _, _ := strings.Cut(chunk, "</script>")
		sum := sha256.Sum256([]byte(script))
		if !strings.Contains(policy, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'") {
			t.Errorf("inline script %.60q is not allowed by %s", script, policy)
		}
		inline++
	}
	if inline == 0 || strings.Count(policy, "'sha256-") != inline {
		t.Errorf("%d inline scripts, policy %s", inline, policy)
	}
	for _, want := range []string{"default-src 'self'", "connect-src 'self'", "object-src 'none'", "frame-ancestors 'none'"} {
		if !strings.Contains(policy, want) {
			t.Errorf("policy %s lacks %s", policy, want)
		}
	}
	if strings.Contains(policy, "http") || strings.Contains(policy, "*") || strings.Contains(policy, "unsafe-eval") {
		t.Errorf("policy %s allows another host or eval", policy)
	}
	if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no nosniff")
	}
}

// TestMonitorPolicyOnEveryPage: asynqmon answers a path it does not know
// with its page; whatever the path (a dot in it, "api" inside it), that
// page carries the policy and the link.
func TestMonitorPolicyOnEveryPage(t *testing.T) {
	t.Parallel()
	mon := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: asynq.RedisClientOpt{Addr: "127.0.0.1:1"}, ReadOnly: true})
	for _, p := range []string{"/monitoring/", "/monitoring/queues/uploads:worker-1.example.com",
		"/monitoring/queues/default/tasks/x.html", "/monitoring/queues/api/x", "/monitoring/servers"} {
		rec := httptest.NewRecorder()
		MonitorBackLink(mon).ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "<script>") {
			t.Fatalf("%s: not the monitor's page: %d", p, rec.Code)
		}
		if !strings.Contains(rec.Header().Get("Content-Security-Policy"), "'sha256-") || !strings.Contains(rec.Body.String(), "dab console") {
			t.Errorf("%s: the page without its policy or link: %q", p, rec.Header().Get("Content-Security-Policy"))
		}
	}
}

// TestMonitorPassesScriptsThrough: an answer that declares a type other
// than HTML is not held: its first bytes reach the client while the monitor
// still writes (its scripts are about a megabyte); HTML, declared in any
// spelling, or undeclared, is held and gets the policy.
func TestMonitorPassesScriptsThrough(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		contentType string
		held        bool
	}{
		{"application/javascript; charset=utf-8", false},
		{"application/json", false},
		{"text/css", false},
		{"image/svg+xml", false},
		{"text/html; charset=utf-8", true},
		{"Text/HTML", true},
		{"text/html;;;", true}, // unparseable: held
		{"", true},
	} {
		rec := httptest.NewRecorder()
		var seenWhileWriting string
		h := MonitorBackLink(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tc.contentType != "" {
				w.Header().Set("Content-Type", tc.contentType)
			}
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "<html><body>first part ")
			seenWhileWriting = rec.Body.String()
			io.WriteString(w, "second part</body></html>")
		}))
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/monitoring/x", nil))
		body := rec.Body.String()
		if tc.held {
			if seenWhileWriting != "" || !strings.Contains(body, "dab console") || rec.Header().Get("Content-Security-Policy") == "" {
				t.Errorf("%q: not held as a page: seen while writing %q, then %q", tc.contentType, seenWhileWriting, body)
			}
			continue
		}
		if seenWhileWriting != "<html><body>first part " || body != "<html><body>first part second part</body></html>" {
			t.Errorf("%q: held or changed: seen while writing %q, then %q", tc.contentType, seenWhileWriting, body)
		}
		if rec.Header().Get("Content-Type") != tc.contentType || !strings.HasPrefix(rec.Header().Get("Content-Security-Policy"), "default-src 'none'") ||
			rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%q: headers %v", tc.contentType, rec.Header())
		}
	}
}
