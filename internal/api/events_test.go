package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
)

const (
	evReadTok   = "events-read-0123456789"
	evIngestTok = "events-ingest-01234567"
	evAliceTok  = "events-alice-012345678"
	evBobTok    = "events-bob-0123456789a"
	evBuyTok    = "events-buyonly-0123456"
)

// TestEventsOverHTTP: GET /v1/events pages through every event for an
// unbound read token and admin; a token bound to an account sees only the
// events about that account (its grants, its purchases and sales, its
// listings) and nothing of another account's money or assets; tokens
// without scope read are refused; bad parameters are 400.
func TestEventsOverHTTP(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("read "+evReadTok+"\ningest "+evIngestTok+"\nread,purchase@alice "+evAliceTok+
		"\nread@bob "+evBobTok+"\npurchase@carol "+evBuyTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := LoadTokens(adminTok, file)
	if err != nil {
		t.Fatal(err)
	}
	s := New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	RegisterEvents(s, event.NewLog(rdb, "dab:"))
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	// The changes: an asset, grants to alice and bob, alice buys it and
	// lists it, bob's purchase of it is rejected (it is alice's, at 3).
	ctx := context.Background()
	assets, led := asset.NewStore(rdb, "dab:"), ledger.New(rdb, "dab:", "house")
	rec, _, err := assets.Put(ctx, asset.Record{Name: "a", Type: "generic", Path: "a", S3Bucket: "b", S3Key: "generic/a", SHA256: "s", Metadata: map[string]string{"price": "5"}})
	if err != nil {
		t.Fatal(err)
	}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(led.Grant(ctx, "g-a", "alice", 10))
	must(led.Grant(ctx, "g-b", "bob", 2))
	must(led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: "p-a", AssetID: rec.ID, BuyerID: "alice", Credits: 5}))
	must(led.SetListing(ctx, rec.ID, "alice", 3, "alice"))
	must(led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: "p-b", AssetID: rec.ID, BuyerID: "bob", Credits: 3}))

	get := func(tok, query string) (int, event.Page, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/events"+query, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var p event.Page
		json.Unmarshal(body, &p)
		return resp.StatusCode, p, body
	}
	// all follows the pages of tok with limit n and returns the types seen.
	all := func(tok string, n int) []string {
		t.Helper()
		var types []string
		after := ""
		for range 100 {
			q := "?limit=" + itoa(n)
			if after != "" {
				q += "&after=" + after
			}
			status, p, body := get(tok, q)
			if status != http.StatusOK {
				t.Fatalf("GET /v1/events%s: %d %s", q, status, body)
			}
			for _, e := range p.Events {
				types = append(types, e.Type)
				if e.ID == "" || e.Time.IsZero() || len(e.Data) == 0 {
					t.Fatalf("event %+v", e)
				}
			}
			if p.Next == after || (after == "" && p.Next == "0") {
				return types
			}
			after = p.Next
		}
		t.Fatal("no end")
		return nil
	}
	everything := "asset.recorded credits.granted credits.granted purchase.succeeded listing.changed purchase.rejected"
	for _, tt := range []struct {
		tok  string
		n    int
		want string
	}{
		{adminTok, 100, everything},
		{evReadTok, 2, everything},
		{evReadTok, 1, everything},
		{evAliceTok, 1, "credits.granted purchase.succeeded listing.changed"},
		{evBobTok, 3, "credits.granted purchase.rejected"},
	} {
		if got := strings.Join(all(tt.tok, tt.n), " "); got != tt.want {
			t.Errorf("token %s, pages of %d: %s, want %s", tt.tok[:12], tt.n, got, tt.want)
		}
	}
	// What alice sees names nobody's money but hers: not bob's grant, nor
	// his rejected purchase (its detail quotes his balance).
	_, p, body := get(evAliceTok, "?limit=1000")
	if strings.Contains(string(body), "bob") || len(p.Events) != 3 {
		t.Fatalf("alice's events name bob: %s", body)
	}
	for _, tt := range []struct {
		tok, query string
		status     int
		code       string
	}{
		{"", "", http.StatusUnauthorized, "unauthorized"},
		{evIngestTok, "", http.StatusForbidden, "forbidden"},
		{evBuyTok, "", http.StatusForbidden, "forbidden"},
		{evReadTok, "?after=abc", http.StatusBadRequest, "bad_after"},
		{evReadTok, "?after=1-2-3", http.StatusBadRequest, "bad_after"},
		{evReadTok, "?limit=0", http.StatusBadRequest, "bad_limit"},
		{evReadTok, "?limit=1001", http.StatusBadRequest, "bad_limit"},
		{evReadTok, "?limit=x", http.StatusBadRequest, "bad_limit"},
	} {
		status, _, body := get(tt.tok, tt.query)
		var e ErrorBody
		json.Unmarshal(body, &e)
		if status != tt.status || e.Error.Code != tt.code {
			t.Errorf("%q with %q: %d %s, want %d %s", tt.query, tt.tok, status, body, tt.status, tt.code)
		}
	}
	// After the last event: an empty page whose next is where the reader is.
	_, p, _ = get(evReadTok, "?limit=1000")
	last := p.Events[len(p.Events)-1].ID
	if status, p, body := get(evReadTok, "?after="+last); status != http.StatusOK || len(p.Events) != 0 || p.Next != last || !strings.Contains(string(body), `"events": []`) {
		t.Fatalf("after the last: %d %s", status, body)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestBoundTokensCannotReadDeliveries: a task for operators only (a
// webhook delivery, whose event may be any account's) is read by no bound
// token; a purchase only by its buyer's; an upload by anyone who reads.
func TestBoundTokensCannotReadDeliveries(t *testing.T) {
	t.Parallel()
	reader := Caller{Scopes: map[string]bool{ScopeRead: true}}
	alice, bob := Caller{Account: "alice"}, Caller{Account: "bob"}
	for _, tt := range []struct {
		c    Caller
		f    TaskFacts
		want bool
	}{
		{alice, TaskFacts{OperatorsOnly: true}, false},
		{bob, TaskFacts{OperatorsOnly: true, BuyerID: "bob"}, false},
		{reader, TaskFacts{OperatorsOnly: true}, true},
		{alice, TaskFacts{BuyerID: "bob"}, false},
		{bob, TaskFacts{BuyerID: "bob"}, true},
		{reader, TaskFacts{BuyerID: "bob"}, true},
		{alice, TaskFacts{AssetID: "a1"}, true},
	} {
		if got := mayReadTask(tt.c, tt.f); got != tt.want {
			t.Errorf("%+v reads %+v: %v, want %v", tt.c, tt.f, got, tt.want)
		}
	}
	// Without the task contract's Describe nothing can say whose a task
	// is: operators only.
	if f := (QueryDeps{}).facts(&asynq.TaskInfo{Payload: []byte(`{"spool_id":"x"}`)}); !f.OperatorsOnly {
		t.Fatalf("facts without Describe: %+v", f)
	}
}
