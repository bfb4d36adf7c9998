package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/webhook"
)

// TestEventsAndWebhooks: `dab serve` with an endpoints file. An upload, a
// grant and a purchase each become one event, readable at GET /v1/events,
// and each is delivered, signed, to the endpoint that takes its type.
func TestEventsAndWebhooks(t *testing.T) {
	t.Parallel()
	secret := webhook.SecretPrefix + base64.StdEncoding.EncodeToString([]byte("e2e-webhook-secret-0123456789abcdef"))
	var mu sync.Mutex
	got := map[string][]event.Event{} // by path
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify(secret, r.Header, body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("a delivery does not verify: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var e event.Event
		json.Unmarshal(body, &e)
		mu.Lock()
		got[r.URL.Path] = append(got[r.URL.Path], e)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	received := func(path string) []string {
		mu.Lock()
		defer mu.Unlock()
		var types []string
		for _, e := range got[path] {
			types = append(types, e.Type)
		}
		// Deliveries run as tasks side by side: their order is not the
		// events' (the README says so); what arrived is what counts.
		sort.Strings(types)
		return types
	}
	hooks := filepath.Join(t.TempDir(), "webhooks")
	os.WriteFile(hooks, []byte("# the shop\n"+rcv.URL+"/all "+secret+"\n"+rcv.URL+"/sales "+secret+" purchase.succeeded\n"), 0o600)
	e, url := httpE2E(t)
	e.env = append(e.env, "DAB_WEBHOOKS_FILE="+hooks, "DAB_WEBHOOKS_ALLOW_HTTP=127.0.0.1", "DAB_WEBHOOKS_ALLOW_PRIVATE=127.0.0.1")
	p := e.start(nil, "serve")
	p.waitLog(t, "webhooks.dispatching", 30*time.Second)
	p.waitLog(t, "http.listening", 30*time.Second)

	file, _ := writeRandomFile(t, t.TempDir(), "NODE_shop.png", 100)
	out, errOut, code := e.run(nil, "upload", file, "--type", "cyoa", "--meta", "price=4", "--wait", "--json")
	if code != 0 {
		t.Fatalf("upload: %s", errOut)
	}
	id := out[strings.Index(out, `"asset_id":"`)+12:][:20]
	for _, args := range [][]string{{"credits", "grant", "amy", "10", "--key", "g-amy"}, {"purchase", "--asset", id, "--buyer", "amy", "--credits", "4", "--key", "k1"}} {
		if out, errOut, code := e.run(nil, args...); code != 0 {
			t.Fatalf("dab %v: %s%s", args, out, errOut)
		}
	}
	want := "asset.recorded credits.granted purchase.succeeded"
	harness.Eventually(t, 30*time.Second, "the deliveries", func() bool {
		return strings.Join(received("/all"), " ") == want && strings.Join(received("/sales"), " ") == "purchase.succeeded"
	}, func() string {
		return strings.Join(received("/all"), " ") + " / " + strings.Join(received("/sales"), " ") + "\n" + p.output()
	})

	req, _ := http.NewRequest(http.MethodGet, url+"/v1/events?limit=10", nil)
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page event.Page
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != http.StatusOK || len(page.Events) != 3 {
		t.Fatalf("GET /v1/events: %d %+v %v", resp.StatusCode, page, err)
	}
	mu.Lock()
	delivered := map[string]event.Event{}
	for _, ev := range got["/all"] {
		delivered[ev.ID] = ev
	}
	mu.Unlock()
	for i, ev := range page.Events {
		a, _ := json.Marshal(ev)
		b, _ := json.Marshal(delivered[ev.ID])
		if string(a) != string(b) {
			t.Errorf("event %d over HTTP\n%s\ndelivered as\n%s", i, a, b)
		}
	}
	if strings.Contains(p.output(), strings.TrimPrefix(secret, webhook.SecretPrefix)) {
		t.Fatal("the log holds the webhook secret")
	}
}

// TestBadWebhooksFileStopsDab: a line that is not an endpoint stops every
// role at start with the file's line number and what is wrong, never the
// secret.
func TestBadWebhooksFileStopsDab(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	secret := webhook.SecretPrefix + base64.StdEncoding.EncodeToString([]byte("e2e-webhook-secret-0123456789abcdef"))
	hooks := filepath.Join(t.TempDir(), "webhooks")
	os.WriteFile(hooks, []byte("https://hooks.example.com/a "+secret+"\nhttp://hooks.example.com/b "+secret+"\n"), 0o600)
	for _, role := range []string{"work", "watch"} {
		out, errOut, code := e.run([]string{"DAB_WEBHOOKS_FILE=" + hooks}, role)
		if code != 1 || !strings.Contains(errOut, "line 2: the URL of host hooks.example.com is http://") || strings.Contains(out+errOut, strings.TrimPrefix(secret, webhook.SecretPrefix)) {
			t.Fatalf("dab %s: exit %d\n%s%s", role, code, out, errOut)
		}
	}
}

// recordedEvents counts the asset.recorded events in the test's events
// stream, by asset ID.
func recordedEvents(t *testing.T, e *e2e) map[string]int {
	t.Helper()
	msgs, err := e.redisClient(t).XRange(context.Background(), event.Keys{Prefix: "dab:"}.Stream(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range msgs {
		if m.Values["type"] != "asset.recorded" {
			continue
		}
		var d struct {
			ID string `json:"id"`
		}
		if s, _ := m.Values["data"].(string); json.Unmarshal([]byte(s), &d) != nil || d.ID == "" {
			t.Fatalf("asset.recorded event %s without an asset ID: %v", m.ID, m.Values)
		}
		out[d.ID]++
	}
	return out
}
