package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
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
