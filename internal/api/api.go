// Package api is dab's HTTP server: one router that every part joins (the
// upload intake, the query endpoints, later the monitor and the console),
// bearer-token auth with scopes, JSON errors, timeouts and graceful shutdown.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sort"
	"strings"
	"time"
)

// Scopes a token can carry. Admin may do everything.
const (
	ScopeIngest   = "ingest"
	ScopeRead     = "read"
	ScopePurchase = "purchase"
	ScopeAdmin    = "admin"
	// ScopeBroker is for other systems that act for their users: it may
	// buy for any buyer it names.
	ScopeBroker = "broker"
	// ScopePublic marks routes that need no token (health, the API document).
	ScopePublic = ""
)

// Route is one registered endpoint.
type Route struct {
	Method, Pattern, Scope string
	// Page is true for console pages and the monitor, which are not part
	// of the API document.
	Page bool
}

// Server routes requests to handlers behind auth.
type Server struct {
	mux    *http.ServeMux
	tokens *Tokens
	// open serves without authentication (--insecure with no tokens).
	open     bool
	sessions *Sessions
	// Deny, when set, answers refused browser page requests (a login page
	// instead of JSON).
	Deny   func(w http.ResponseWriter, r *http.Request, status int, message string) bool
	log    *slog.Logger
	routes []Route
	// Timeout bounds reading the request and writing the response of
	// ordinary routes; upload routes (Streaming) manage their own.
	timeout time.Duration
}

// New returns a server that authenticates with tokens. With open set (the
// --insecure mode, only allowed when no token is configured) every request
// acts as admin.
func New(tokens *Tokens, open bool, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{mux: http.NewServeMux(), tokens: tokens, open: open, log: log, timeout: 30 * time.Second}
}

// Option changes how one route is served.
type Option func(*routeOpts)

type routeOpts struct{ streaming, page bool }

// Page marks a console page (or the monitor): not in the API document, and
// refusals go through Deny (a login page for browsers).
func Page() Option { return func(o *routeOpts) { o.page = true } }

// Streaming marks a route that reads a large body: it gets no overall
// deadline (the handler sets an idle deadline instead).
func Streaming() Option { return func(o *routeOpts) { o.streaming = true } }

// Handle registers h for "METHOD /pattern" behind scope.
func (s *Server) Handle(method, pattern, scope string, h http.Handler, opts ...Option) {
	var o routeOpts
	for _, opt := range opts {
		opt(&o)
	}
	s.routes = append(s.routes, Route{Method: method, Pattern: pattern, Scope: scope, Page: o.page})
	var wrapped http.Handler = h
	if scope != ScopePublic {
		wrapped = s.require(scope, wrapped)
	}
	if !o.streaming {
		wrapped = s.withDeadlines(wrapped)
	}
	if method == "" {
		s.mux.Handle(pattern, wrapped) // every method (the monitor)
		return
	}
	s.mux.Handle(method+" "+pattern, wrapped)
}

// HandleFunc is Handle for a function.
func (s *Server) HandleFunc(method, pattern, scope string, h http.HandlerFunc, opts ...Option) {
	s.Handle(method, pattern, scope, h, opts...)
}

// Routes lists the registered endpoints, sorted.
func (s *Server) Routes() []Route {
	out := append([]Route(nil), s.routes...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pattern != out[j].Pattern {
			return out[i].Pattern < out[j].Pattern
		}
		return out[i].Method < out[j].Method
	})
	return out
}

// deny answers a refused request: through Deny for pages, JSON otherwise.
func (s *Server) deny(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	if s.Deny != nil && s.Deny(w, r, status, message) {
		return
	}
	WriteError(w, status, code, message)
}

// Handler is the whole server: routes, JSON 404/405, panic recovery, an
// access log line per request, and cross-origin protection: a browser
// request that changes something must come from dab's own pages (this is
// the console's CSRF defence, next to SameSite=Strict cookies).
func (s *Server) Handler() http.Handler {
	cop := http.NewCrossOriginProtection()
	return cop.Handler(s.handler())
}

func (s *Server) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("http.panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if !rec.wrote {
					WriteError(rec, http.StatusInternalServerError, "internal", "the server failed; the log has the details")
				}
			}
			s.log.Info("http.request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
				"bytes_in", r.ContentLength, "duration_ms", time.Since(start).Milliseconds())
		}()
		_, pattern := s.mux.Handler(r)
		if pattern == "" {
			s.notFound(rec, r)
			return
		}
		s.mux.ServeHTTP(rec, r)
	})
}

// notFound answers JSON for unknown paths and wrong methods.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, rt := range s.routes {
		if matches(rt.Pattern, r.URL.Path) {
			allowed = append(allowed, rt.Method)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s is not allowed here; use %s", r.Method, strings.Join(allowed, " or ")))
		return
	}
	WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path+"; the API is described at /v1/openapi.json")
}

// matches reports whether a ServeMux pattern (without method) matches path.
func matches(pattern, path string) bool {
	m := http.NewServeMux()
	m.HandleFunc(pattern, func(http.ResponseWriter, *http.Request) {})
	_, p := m.Handler(&http.Request{Method: http.MethodGet, URL: mustURL(path)})
	return p != ""
}

// withDeadlines bounds reading and writing of an ordinary request.
func (s *Server) withDeadlines(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		deadline := time.Now().Add(s.timeout)
		rc.SetReadDeadline(deadline)
		rc.SetWriteDeadline(deadline)
		h.ServeHTTP(w, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer (deadlines, flush).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// ErrorBody is the JSON of every error answer.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// WriteError answers {"error": {"code", "message"}} with status.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, message
	WriteJSON(w, status, b)
}

// WriteJSON answers v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // an API, not a page: keep "<" readable
	enc.Encode(v)
}

// Serve serves h on ln until ctx ends, then shuts down gracefully: running
// requests get up to grace to finish.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, grace time.Duration, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	log.Info("http.listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		log.Warn("http.shutdown", "note", "requests still running after the grace period were cut off", "error", err.Error())
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	log.Info("http.stopped")
	return nil
}

// IsLoopback reports whether addr (host:port) listens on loopback only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
