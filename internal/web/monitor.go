package web

import (
	"bytes"
	"net/http"
	"path"
	"strconv"
	"strings"
)

// backLink is put into the monitor's pages: asynqmon has no place for a
// link of its own, and an operator who opened it from the console should
// get back without the browser's history.
const backLink = `<a href="/assets" style="position:fixed;right:12px;bottom:12px;z-index:9999;background:#1f3b63;color:#fff;padding:6px 12px;border-radius:4px;font:14px sans-serif;text-decoration:none">&larr; dab console</a>`

// MonitorBackLink wraps the Asynq monitor so that its HTML pages carry a
// link back to the console. Its API, scripts and styles pass untouched.
func MonitorBackLink(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || strings.Contains(r.URL.Path, "/api/") || path.Ext(r.URL.Path) != "" {
			h.ServeHTTP(w, r)
			return
		}
		buf := &bufferedResponse{header: http.Header{}, status: http.StatusOK}
		h.ServeHTTP(buf, r)
		body := buf.body.Bytes()
		ct := buf.header.Get("Content-Type")
		if ct == "" {
			// What net/http would have sent: asynqmon leaves it to sniffing.
			ct = http.DetectContentType(body)
			buf.header.Set("Content-Type", ct)
		}
		if strings.HasPrefix(ct, "text/html") {
			if i := bytes.LastIndex(body, []byte("</body>")); i >= 0 {
				body = append(body[:i:i], append([]byte(backLink), body[i:]...)...)
			}
		}
		for k, v := range buf.header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(buf.status)
		w.Write(body)
	})
}

// bufferedResponse holds a page until it is complete.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) WriteHeader(status int)      { b.status = status }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
