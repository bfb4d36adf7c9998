package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/webhook"
)

// received is one request a test receiver got.
type received struct {
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// receiver is an HTTP server on loopback that answers each request with
// the next status of answers (the last one from then on) and keeps what
// it received.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	answers []int
	got     []received
	delay   time.Duration
}

func newReceiver(t *testing.T, answers ...int) *receiver {
	t.Helper()
	r := &receiver{answers: answers}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{Headers: map[string]string{
			"webhook-id": req.Header.Get("webhook-id"), "webhook-timestamp": req.Header.Get("webhook-timestamp"),
			"webhook-signature": req.Header.Get("webhook-signature"), "content-type": req.Header.Get("Content-Type"),
		}, Body: string(body)})
		status := r.answers[min(len(r.got), len(r.answers))-1]
		delay := r.delay
		r.mu.Unlock()
		time.Sleep(delay)
		switch status {
		case http.StatusFound:
			http.Redirect(w, req, "/elsewhere", status)
		case http.StatusTooManyRequests:
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(status)
		default:
			w.WriteHeader(status)
			io.WriteString(w, "answer\x00 of the receiver\n")
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// endpoint parses one endpoints-file line for url (loopback allowed).
func endpoint(t *testing.T, url, secret string) (*webhook.Sender, webhook.Endpoint) {
	t.Helper()
	eps, err := parse(url+" "+secret, webhook.Options{AllowHTTP: []string{"127.0.0.1", "localhost"}, AllowPrivate: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	s := webhook.NewSender(eps, webhook.SenderOptions{Timeout: 2 * time.Second})
	t.Cleanup(s.Close)
	return s, eps[0]
}

// verifyWithNode runs the Standard Webhooks reference verifier (npm
// standardwebhooks) on deliveries.
func verifyWithNode(t *testing.T, secret string, deliveries []received) []struct {
	OK    bool            `json:"ok"`
	Event json.RawMessage `json:"event"`
	Error string          `json:"error"`
} {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("the webhook tests need Node.js: apt-get install -y nodejs npm, then npm ci --prefix internal/webhook/testdata/standardwebhooks (or run `make test`)")
	}
	if _, err := os.Stat("testdata/standardwebhooks/node_modules/standardwebhooks"); err != nil {
		t.Fatal("the webhook tests need the standardwebhooks package: npm ci --prefix internal/webhook/testdata/standardwebhooks (or run `make test`)")
	}
	in, _ := json.Marshal(map[string]any{"secret": secret, "deliveries": deliveries})
	cmd := exec.Command(node, "testdata/standardwebhooks/verify.mjs")
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node verify.mjs: %v: %s", err, out)
	}
	var res []struct {
		OK    bool            `json:"ok"`
		Event json.RawMessage `json:"event"`
		Error string          `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(deliveries) {
		t.Fatalf("verify.mjs printed %s: %v", out, err)
	}
	return res
}

// TestSignatureVerifies: a delivery carries the Standard Webhooks headers,
// and its signature verifies in Go and with the reference library;
// a tampered body, another secret or an old timestamp does not.
func TestSignatureVerifies(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, http.StatusNoContent)
	s1 := secret(32)
	sender, ep := endpoint(t, rcv.URL+"/hook?token=abc", s1)
	bodies := []string{
		`{"id":"1767225600000-0","type":"credits.granted","time":"2026-01-01T00:00:00Z","data":{"account":"alice","credits":5}}`,
		`{"id":"1767225600001-3","type":"asset.recorded","time":"2026-01-01T00:00:00.5Z","data":{"name":"<é>.png","metadata":{}}}`,
	}
	for i, b := range bodies {
		d, err := sender.Send(context.Background(), ep.ID, strings.Split(b, `"`)[3], []byte(b))
		if err != nil || d.Status != http.StatusNoContent || d.Endpoint != 1 {
			t.Fatalf("delivery %d: %+v %v", i, d, err)
		}
	}
	got := rcv.requests()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2", len(got))
	}
	for i, r := range got {
		if r.Body != bodies[i] || r.Headers["content-type"] != "application/json" || r.Headers["webhook-id"] != strings.Split(bodies[i], `"`)[3] ||
			!strings.HasPrefix(r.Headers["webhook-signature"], "v1,") {
			t.Fatalf("request %d = %+v", i, r)
		}
		ts, _ := strconv.ParseInt(r.Headers["webhook-timestamp"], 10, 64)
		if d := time.Since(time.Unix(ts, 0)); d < -time.Second || d > 10*time.Second {
			t.Fatalf("request %d: timestamp %d is not now", i, ts)
		}
		h := http.Header{}
		for k, v := range r.Headers {
			h.Set(k, v)
		}
		if err := webhook.Verify(s1, h, []byte(r.Body), time.Now(), 5*time.Minute); err != nil {
			t.Errorf("request %d does not verify in Go: %v", i, err)
		}
		if err := webhook.Verify(s1, h, []byte(r.Body+" "), time.Now(), 5*time.Minute); !errors.Is(err, webhook.ErrBadSignature) {
			t.Errorf("request %d with a tampered body: %v", i, err)
		}
		if err := webhook.Verify(secret(40), h, []byte(r.Body), time.Now(), 5*time.Minute); !errors.Is(err, webhook.ErrBadSignature) {
			t.Errorf("request %d with another secret: %v", i, err)
		}
		if err := webhook.Verify(s1, h, []byte(r.Body), time.Now().Add(time.Hour), 5*time.Minute); !errors.Is(err, webhook.ErrBadSignature) {
			t.Errorf("request %d an hour later: %v", i, err)
		}
	}
	tampered := got[0]
	tampered.Body = strings.Replace(tampered.Body, `"credits":5`, `"credits":500`, 1)
	res := verifyWithNode(t, s1, append(got, tampered))
	for i := range got {
		var back map[string]any
		if !res[i].OK || json.Unmarshal(res[i].Event, &back) != nil || back["id"] != strings.Split(bodies[i], `"`)[3] {
			t.Errorf("standardwebhooks refused delivery %d: %+v", i, res[i])
		}
	}
	if res[2].OK {
		t.Error("standardwebhooks accepted a tampered body: the verifier is not verifying")
	}
}

// TestSendOutcomes: which answers are tried again and which are final;
// no error names the URL (it may carry a token) or the secret.
func TestSendOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		delay      time.Duration
		permanent  bool
		retryAfter time.Duration
		want       string
	}{
		{"200", http.StatusOK, 0, false, 0, ""},
		{"500", http.StatusInternalServerError, 0, false, 0, "answered 500 Internal Server Error (answer of the receiver): tried again later"},
		{"503", http.StatusServiceUnavailable, 0, false, 0, "answered 503"},
		{"408", http.StatusRequestTimeout, 0, false, 0, "answered 408"},
		{"429 with Retry-After", http.StatusTooManyRequests, 0, false, 2 * time.Minute, "answered 429"},
		{"410", http.StatusGone, 0, true, 0, "answered 410 Gone"},
		{"400", http.StatusBadRequest, 0, true, 0, "answered 400"},
		{"302 is not followed", http.StatusFound, 0, true, 0, "dab does not follow redirects"},
		{"timeout", http.StatusOK, 3 * time.Second, false, 0, "not delivered (tried again later)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rcv := newReceiver(t, tt.status)
			rcv.delay = tt.delay
			s := secret(32)
			sender, ep := endpoint(t, rcv.URL+"/in?token=sekrit", s)
			_, err := sender.Send(context.Background(), ep.ID, "1-0", []byte(`{"id":"1-0"}`))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, webhook.ErrPermanent) != tt.permanent {
				t.Fatalf("error %v, want %q, permanent %v", err, tt.want, tt.permanent)
			}
			if !strings.Contains(err.Error(), "webhook endpoint 1 (127.0.0.1)") {
				t.Errorf("the error does not name the endpoint: %v", err)
			}
			for _, leak := range []string{"sekrit", "/in", strings.TrimPrefix(s, webhook.SecretPrefix)[:12]} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("the error quotes %q: %v", leak, err)
				}
			}
			var ra *webhook.RetryAfterError
			if got := errors.As(err, &ra); got != (tt.retryAfter > 0) || got && ra.After != tt.retryAfter {
				t.Errorf("Retry-After: %v %+v, want %s", got, ra, tt.retryAfter)
			}
			if n := len(rcv.requests()); n != 1 {
				t.Errorf("%d requests (a redirect followed?), want 1", n)
			}
		})
	}
	sender, _ := endpoint(t, "https://a.example.com/x", secret(32))
	if _, err := sender.Send(context.Background(), "0123456789abcdef", "1-0", []byte("{}")); !errors.Is(err, webhook.ErrUnknownEndpoint) || !errors.Is(err, webhook.ErrPermanent) {
		t.Fatalf("an unknown endpoint: %v", err)
	}
}

// TestPrivateAddressRefusedWhenConnecting: a host name that resolves to a
// loopback (or any non-public) address passes the file's check, which
// cannot know where a name leads, and is refused when dab connects, on the
// address actually dialed; nothing reaches the receiver. Allowing the host
// lets it through.
func TestPrivateAddressRefusedWhenConnecting(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, http.StatusOK)
	url := strings.Replace(rcv.URL, "127.0.0.1", "localhost", 1) + "/hook"
	tests := []struct {
		name         string
		allowPrivate []string
		refused      bool
	}{
		{"not allowed", nil, true},
		{"another host allowed", []string{"127.0.0.1"}, true},
		{"allowed", []string{"localhost"}, false},
	}
	for _, tt := range tests {
		eps, err := parse(url+" "+secret(32), webhook.Options{AllowHTTP: []string{"localhost"}, AllowPrivate: tt.allowPrivate})
		if err != nil {
			t.Fatal(err)
		}
		sender := webhook.NewSender(eps, webhook.SenderOptions{})
		before := len(rcv.requests())
		_, err = sender.Send(context.Background(), eps[0].ID, "1-0", []byte(`{}`))
		sender.Close()
		if tt.refused {
			if !errors.Is(err, webhook.ErrBlockedAddress) || !errors.Is(err, webhook.ErrPermanent) || !strings.Contains(err.Error(), "DAB_WEBHOOKS_ALLOW_PRIVATE") {
				t.Fatalf("%s: %v, want a refusal naming DAB_WEBHOOKS_ALLOW_PRIVATE", tt.name, err)
			}
			if len(rcv.requests()) != before {
				t.Fatalf("%s: the receiver got the event", tt.name)
			}
			continue
		}
		if err != nil || len(rcv.requests()) != before+1 {
			t.Fatalf("%s: %v", tt.name, err)
		}
	}
}
