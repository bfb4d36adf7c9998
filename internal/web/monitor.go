package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"mime"
	"net/http"
	"strconv"
)

// backLink is put into the monitor's pages: asynqmon has no place for a
// link of its own, and an operator who opened it from the console should
// get back without the browser's history.
const backLink = `<a href="/assets" style="position:fixed;right:12px;bottom:12px;z-index:9999;background:#1f3b63;color:#fff;padding:6px 12px;border-radius:4px;font:14px sans-serif;text-decoration:none">&larr; dab console</a>`

// MonitorBackLink wraps the Asynq monitor so that every HTML page it serves
// carries a link back to the console and a Content-Security-Policy
// (monitorPolicy). Its API, scripts and styles pass untouched: an answer
// that declares a type other than HTML before its first byte goes straight
// through (the monitor's scripts are about a megabyte); one that declares
// HTML or nothing is held until complete (what is HTML is known from the
// answer, not from the path).
func MonitorBackLink(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every GET is looked at, whatever its path: asynqmon answers any
		// path it does not know (one with a dot, say a queue named after a
		// host) with its page, which must carry the policy too.
		if r.Method != http.MethodGet {
			h.ServeHTTP(w, r)
			return
		}
		buf := &monitorResponse{w: w, header: http.Header{}, status: http.StatusOK}
		h.ServeHTTP(buf, r)
		if buf.passing {
			return
		}
		body := buf.body.Bytes()
		ct := buf.header.Get("Content-Type")
		if ct == "" {
			// What net/http would have sent: asynqmon leaves it to sniffing.
			ct = http.DetectContentType(body)
			buf.header.Set("Content-Type", ct)
		}
		if isHTML(ct) {
			if i := bytes.LastIndex(body, []byte("</body>")); i >= 0 {
				body = append(body[:i:i], append([]byte(backLink), body[i:]...)...)
			}
			buf.header.Set("Content-Security-Policy", monitorPolicy(body))
			buf.header.Set("X-Content-Type-Options", "nosniff")
		}
		for k, v := range buf.header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(buf.status)
		w.Write(body)
	})
}

// monitorPolicy is the Content-Security-Policy of a monitor page: scripts
// from the monitor itself and the page's own inline scripts (by their
// SHA-256: asynqmon's page sets its options and loads its chunks inline),
// nothing from other hosts. The page asks Google for its fonts; refused,
// it falls back to the browser's, and an operator's browser tells no one
// else that the monitor is open. Inline styles stay allowed: the
// monitor's components set theirs at run time, and the back link has one.
// The monitor shows task payloads, file names from anyone who may
// upload: should one ever get through its escaping, it can load nothing
// and send nothing elsewhere.
func monitorPolicy(page []byte) string {
	scripts := "'self'"
	for rest := page; ; {
		i := bytes.Index(rest, []byte("<script>"))
		if i < 0 {
			break
		}
		rest = rest[i+len("<script>"):]
		j := bytes.Index(rest, []byte("</script>"))
		if j < 0 {
			break
		}
		sum := sha256.Sum256(rest[:j])
		scripts += " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		rest = rest[j:]
	}
	return "default-src 'self'; script-src " + scripts + "; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// monitorResponse holds an answer until it is complete, unless it declares
// a type other than HTML when it starts (its status or first byte): then it
// passes straight through.
type monitorResponse struct {
	w       http.ResponseWriter
	header  http.Header
	status  int
	started bool
	passing bool
	body    bytes.Buffer
}

func (m *monitorResponse) Header() http.Header { return m.header }

func (m *monitorResponse) WriteHeader(status int) {
	if m.started {
		return // as net/http: the first status counts
	}
	m.status = status
	m.start()
}

func (m *monitorResponse) Write(p []byte) (int, error) {
	if !m.started {
		m.start()
	}
	if m.passing {
		return m.w.Write(p)
	}
	return m.body.Write(p)
}

// start decides, on the answer's first status or byte, whether it is held.
func (m *monitorResponse) start() {
	m.started = true
	if ct := m.header.Get("Content-Type"); ct == "" || isHTML(ct) {
		return
	}
	m.passing = true
	for k, v := range m.header {
		m.w.Header()[k] = v
	}
	// Not a page, and never one: a browser that opens it (an SVG, say)
	// runs nothing from it and sniffs no other type.
	m.w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox")
	m.w.Header().Set("X-Content-Type-Options", "nosniff")
	m.w.WriteHeader(m.status)
}

// isHTML: a Content-Type that a browser renders as a page. One it cannot
// parse counts as HTML: it is held and given the policy.
func isHTML(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err != nil || mt == "text/html"
}
