package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/webhook"
)

// verifyDelivery is the receiver's check the README shows ("Verifying a
// delivery in Go"), kept identical to it: this test proves it accepts what
// dab signs and refuses what it must.
func verifyDelivery(secret string, h http.Header, body []byte) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sent, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sent, 0)).Abs() > 5*time.Minute {
		return false // an old (replayed) or malformed delivery
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return true
		}
	}
	return false
}

func TestReadmeVerifier(t *testing.T) {
	t.Parallel()
	s := secret(32)
	body := []byte(`{"id":"1767225600000-0","type":"credits.granted","time":"2026-01-01T00:00:00Z","data":{}}`)
	sign := func(key string, at time.Time, b []byte) http.Header {
		raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(key, "whsec_"))
		h := http.Header{}
		h.Set("webhook-id", "1767225600000-0")
		h.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
		h.Set("webhook-signature", "v1,bm90IGl0 "+webhook.Sign(raw, "1767225600000-0", at.Unix(), b))
		return h
	}
	if !verifyDelivery(s, sign(s, time.Now(), body), body) {
		t.Fatal("the README's verifier refuses a good delivery")
	}
	for name, h := range map[string]http.Header{"other secret": sign(secret(40), time.Now(), body), "old": sign(s, time.Now().Add(-time.Hour), body)} {
		if verifyDelivery(s, h, body) {
			t.Errorf("the README's verifier accepts a delivery with %s", name)
		}
	}
	if verifyDelivery(s, sign(s, time.Now(), body), append(body, ' ')) {
		t.Error("the README's verifier accepts a changed body")
	}
	// And what the real sender sends.
	var got http.Header
	var gotBody []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		gotBody, _ = io.ReadAll(r.Body)
	}))
	defer srv.Close()
	sender, ep := endpoint(t, srv.URL, s)
	if _, err := sender.Send(t.Context(), ep.ID, "1767225600000-0", body); err != nil {
		t.Fatal(err)
	}
	if !verifyDelivery(s, got, gotBody) {
		t.Fatal("the README's verifier refuses dab's delivery")
	}
}
