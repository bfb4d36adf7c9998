package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/metrics"
)

// TestRouteTable reads the one route table of dab's HTTP API (the routes
// the real server registers, as `dab serve` builds it) and checks it both
// ways against the OpenAPI document, then runs the auth matrix over every
// route: without a token a route is refused (401, or the login page for
// console pages) unless it is public, and with a token that has none of its
// scopes it is 403.
func TestRouteTable(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	const (
		ingestTok = "routes-ingest-0123456789"
		readTok   = "routes-read-0123456789ab"
		brokerTok = "routes-broker-0123456789"
		boundTok  = "routes-bound-alice-01234"
	)
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("ingest "+ingestTok+"\nread "+readTok+"\nbroker "+brokerTok+"\nread,purchase@alice "+boundTok+"\n"), 0o600)
	vars := map[string]string{"DAB_TOKENS_FILE": tokens, "DAB_ADMIN_TOKEN": e2eToken}
	for _, kv := range e.env {
		k, v, _ := strings.Cut(kv, "=")
		if _, set := vars[k]; !set {
			vars[k] = v
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	getenv := func(k string) string { return vars[k] }
	a, err := newApp(&env{stdout: io.Discard, stderr: io.Discard, getenv: getenv}, config.NewLoader(getenv), nil, roleServer)
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := a.connectRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	a.metrics = metrics.New()
	serve, err := a.newHTTP(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }() // releases the bound port when ctx ends
	defer func() {
		cancel()
		<-done
		for _, c := range a.closers {
			c()
		}
	}()
	routes := a.server.Routes()
	handler := a.server.Handler()

	// The OpenAPI document lists every API route, and nothing else.
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	b, err := os.ReadFile("../../internal/api/openapi.json")
	if err != nil || json.Unmarshal(b, &doc) != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	served := httptest.NewRecorder()
	handler.ServeHTTP(served, httptest.NewRequest(http.MethodGet, "/v1/openapi.json", nil))
	if served.Body.String() != string(b) {
		t.Fatal("the served /v1/openapi.json differs from internal/api/openapi.json")
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	registered := map[string]bool{}
	for _, r := range routes {
		if r.Page {
			continue
		}
		key := r.Method + " " + strings.NewReplacer("...}", "}", "{$}", "").Replace(r.Pattern)
		registered[key] = true
		if !documented[key] {
			t.Errorf("route %s is not in openapi.json", key)
		}
	}
	if len(registered) < 20 || len(routes) < 30 {
		t.Fatalf("the server registers %d routes (%d API routes): the table is not the real server's", len(routes), len(registered))
	}
	for key := range documented {
		if !registered[key] {
			t.Errorf("openapi.json documents %s, which the server does not serve", key)
		}
	}

	// The auth matrix.
	concrete := strings.NewReplacer("{id}", "0123456789abcdef0123", "{type}", "generic", "{path...}", "a.bin",
		"{story}", "forest", "{n}", "1", "{$}", "")
	has := func(scope, tok string) bool {
		mine := map[string][]string{ingestTok: {api.ScopeIngest}, readTok: {api.ScopeRead}, brokerTok: {api.ScopeBroker}}[tok]
		for _, s := range strings.Split(scope, ",") {
			for _, m := range mine {
				if s == m {
					return true
				}
			}
		}
		return false
	}
	for _, r := range routes {
		method := r.Method
		if method == "" {
			method = http.MethodGet
		}
		path := concrete.Replace(r.Pattern)
		if strings.HasSuffix(r.Pattern, "/") && r.Method == "" {
			path += "api/queues"
		}
		do := func(tok string) int {
			req := httptest.NewRequest(method, path, strings.NewReader("{}"))
			req.RemoteAddr = "192.0.2.7:1234"
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			return rec.Code
		}
		if r.Scope == api.ScopePublic {
			continue
		}
		if code := do(""); code != http.StatusUnauthorized && !(r.Page && code == http.StatusSeeOther) {
			t.Errorf("%s %s without a token: %d, want 401 (or the login page)", method, path, code)
		}
		lacking := ""
		for _, tok := range []string{ingestTok, readTok, brokerTok} {
			if !has(r.Scope, tok) {
				lacking = tok
				break
			}
		}
		if lacking == "" {
			continue
		}
		if code := do(lacking); code != http.StatusForbidden {
			t.Errorf("%s %s (scope %q) with a token lacking it: %d, want 403", method, path, r.Scope, code)
		}
	}
}
