package watcher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/worker/task"
)

func TestGrantsAndAccounts(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, IntakeConfig{})
	grant := func(token, key, body string) answer {
		hdr := map[string]string{"Content-Type": "application/json"}
		if key != "" {
			hdr["Idempotency-Key"] = key
		}
		return h.do(t, "POST", "/v1/accounts/alice/grants", token, strings.NewReader(body), hdr)
	}
	tests := []struct {
		token, key, body string
		status           int
		code             string
	}{
		{testAdmin, "", `{"credits": 5}`, 400, "idempotency_key_required"},
		{testReader, "g1", `{"credits": 5}`, 403, "forbidden"},
		{testBuyer, "g1", `{"credits": 5}`, 403, "forbidden"},
		{testAdmin, "g1", `{"credits": 0}`, 400, "bad_credits"},
		{testAdmin, "g1", `{"credits": -3}`, 400, "bad_credits"},
		{testAdmin, "g1", `{"credits": 1.5}`, 400, "bad_credits"},
		{testAdmin, "g1", `{"credits": 99999999999999999999}`, 400, "bad_credits"},
		{testAdmin, "g1", `{"credits": "5"}`, 400, "bad_credits"},
		{testAdmin, "g1", `{"credits": 5, "extra": 1}`, 400, "bad_json"},
		{testAdmin, "g1", `{"credits": 5} {}`, 400, "bad_json"},
		{testAdmin, "g1", `not json`, 400, "bad_json"},
	}
	for _, tt := range tests {
		if a := grant(tt.token, tt.key, tt.body); a.status != tt.status || a.errCode() != tt.code {
			t.Errorf("grant %s %q: %d %s, want %d %s", tt.key, tt.body, a.status, a.body, tt.status, tt.code)
		}
	}
	first, again := grant(testAdmin, "g1", `{"credits": 5}`), grant(testAdmin, "g1", `{"credits": 5}`)
	var g1, g2 ledger.GrantResult
	first.json(t, &g1)
	again.json(t, &g2)
	if first.status != 201 || g1.EntryID == "" || g2.EntryID != g1.EntryID || g2.Balance != 5 {
		t.Fatalf("grant and repeat: %s / %s", first.body, again.body)
	}
	if a := grant(testAdmin, "g1", `{"credits": 6}`); a.status != 409 {
		t.Fatalf("same key, other credits: %d %s", a.status, a.body)
	}
	var acct ledger.Account
	a := h.do(t, "GET", "/v1/accounts/alice", testBuyer, nil, nil)
	a.json(t, &acct)
	if acct.Balance != 5 || len(acct.Entries) != 1 || acct.Entries[0].Kind != "grant" {
		t.Fatalf("account: %s", a.body)
	}
	a = h.do(t, "GET", "/v1/accounts/nobody-yet", testReader, nil, nil)
	a.json(t, &acct)
	if a.status != 200 || acct.Balance != 0 {
		t.Fatalf("new account: %s", a.body)
	}
	if a := h.do(t, "GET", "/v1/accounts/bad%20id", testReader, nil, nil); a.status != 400 {
		t.Fatalf("bad account id: %d", a.status)
	}
}

func TestPurchasesOverHTTP(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, IntakeConfig{})
	rec, _, err := h.assets.Put(context.Background(), asset.Record{Name: "a", Type: "generic", Path: "a", S3Bucket: "b", S3Key: "generic/a", SHA256: "s"})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"asset_id": "` + rec.ID + `", "buyer_id": "zed", "credits": 3}`
	post := func(token, key, body string) answer {
		hdr := map[string]string{"Content-Type": "application/json"}
		if key != "" {
			hdr["Idempotency-Key"] = key
		}
		return h.do(t, "POST", "/v1/purchases", token, strings.NewReader(body), hdr)
	}
	for _, tt := range []struct {
		token, key, body string
		status           int
		code             string
	}{
		{testBuyer, "", body, 400, "idempotency_key_required"},
		{testReader, "p1", body, 403, "forbidden"},
		{"", "p1", body, 401, "unauthorized"},
		{testBuyer, "p1", `{"asset_id": "x"}`, 400, "bad_credits"},
		{testBuyer, "p1", `{"asset_id": "` + rec.ID + `", "buyer_id": "zed", "credits": 0}`, 400, "bad_credits"},
		{testBuyer, "p1", `{"asset_id": "nope", "buyer_id": "zed", "credits": 1}`, 400, "invalid"},
		{testBuyer, "p 1", body, 400, "invalid"},
		{testBuyer, "p1", `[]`, 400, "bad_json"},
	} {
		if a := post(tt.token, tt.key, tt.body); a.status != tt.status || a.errCode() != tt.code {
			t.Errorf("%q %q: %d %s, want %d %s", tt.key, tt.body, a.status, a.body, tt.status, tt.code)
		}
	}
	// A thousand clients send the same purchase at once: one pending
	// purchase, one task.
	var wg sync.WaitGroup
	answers := make([]answer, 1000)
	for i := range answers {
		wg.Add(1)
		go func() { defer wg.Done(); answers[i] = post(testBuyer, "p1", body) }()
	}
	wg.Wait()
	for _, a := range answers {
		var pa PurchaseAccepted
		a.json(t, &pa)
		if a.status != 202 || pa.PurchaseID != "p1" || pa.Status != ledger.StatusPending || pa.TaskID != task.PurchaseTaskID("p1") {
			t.Fatalf("concurrent send: %d %s", a.status, a.body)
		}
	}
	if info, err := h.insp.GetQueueInfo(task.QueuePurchases); err != nil || info.Size != 1 {
		t.Fatalf("queued purchases: %+v %v", info, err)
	}
	if a := post(testBuyer, "p1", strings.Replace(body, `"credits": 3`, `"credits": 4`, 1)); a.status != 409 {
		t.Fatalf("same key, other credits: %d %s", a.status, a.body)
	}
	// The worker applies it (here: the ledger, as the worker's handler does).
	if _, err := h.ledger.Apply(context.Background(), ledger.PurchaseRequest{PurchaseID: "p1", AssetID: rec.ID, BuyerID: "zed", Credits: 3}); err != nil {
		t.Fatal(err)
	}
	var got ledger.PurchaseResult
	a := h.do(t, "GET", "/v1/purchases/p1", testReader, nil, nil)
	a.json(t, &got)
	if got.Status != ledger.StatusRejected || got.Reason != ledger.ReasonInsufficientCredits {
		t.Fatalf("status: %s", a.body)
	}
	again := post(testBuyer, "p1", body)
	var replay ledger.PurchaseResult
	json.Unmarshal(again.body, &replay)
	if again.status != 200 || again.header.Get("Idempotent-Replayed") != "true" || replay != got {
		t.Fatalf("repeat after the result: %d %s", again.status, again.body)
	}
	if a := h.do(t, "GET", "/v1/purchases/unknown", testReader, nil, nil); a.status != 404 {
		t.Fatalf("unknown purchase: %d", a.status)
	}
	// An admin sets a price; a purchase must then pay exactly that.
	if a := h.do(t, "POST", "/v1/assets/"+rec.ID+"/price", testBuyer, strings.NewReader(`{"credits": 2}`), nil); a.status != 403 {
		t.Fatalf("price by a buyer: %d", a.status)
	}
	a = h.do(t, "POST", "/v1/assets/"+rec.ID+"/price", testAdmin, strings.NewReader(`{"credits": 2}`), nil)
	var priced asset.Record
	a.json(t, &priced)
	if a.status != 200 || priced.Price != 2 {
		t.Fatalf("set price: %d %s", a.status, a.body)
	}
	h.ledger.Grant(context.Background(), "gz", "zed", 10)
	r, _ := h.ledger.Apply(context.Background(), ledger.PurchaseRequest{PurchaseID: "p2", AssetID: rec.ID, BuyerID: "zed", Credits: 3})
	if r.Reason != ledger.ReasonWrongPrice {
		t.Fatalf("after the price: %+v", r)
	}
	for _, bad := range []string{`{"credits": -1}`, `{"credits": "2"}`, `{}`} {
		if a := h.do(t, "POST", "/v1/assets/"+rec.ID+"/price", testAdmin, strings.NewReader(bad), nil); a.status != 400 {
			t.Errorf("price %s: %d", bad, a.status)
		}
	}
	if a := h.do(t, "POST", "/v1/assets/0123456789abcdef0123/price", testAdmin, strings.NewReader(`{"credits": 1}`), nil); a.status != 404 {
		t.Fatalf("price of a missing asset: %d", a.status)
	}
}

// TestPurchaseBodyAndCredits: POST /v1/purchases reads its body like the
// ledger's routes (one JSON object, at most api.JSONBodyMax bytes, nothing
// after it: the security review's {...} + 5 MB of spaces + garbage once got
// through) and takes amounts from 1 to ledger.CreditsMax.
func TestPurchaseBodyAndCredits(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, IntakeConfig{})
	rec, _, err := h.assets.Put(context.Background(), asset.Record{Name: "a", Type: "generic", Path: "a", S3Bucket: "b", S3Key: "generic/a", SHA256: "s"})
	if err != nil {
		t.Fatal(err)
	}
	body := func(credits int64) string {
		return fmt.Sprintf(`{"asset_id": %q, "buyer_id": "zed", "credits": %d}`, rec.ID, credits)
	}
	tests := []struct {
		key, body     string
		status        int
		code, message string
	}{
		{"attack", body(3) + strings.Repeat(" ", 5<<20) + "garbage", 413, "too_large", "64 KiB"},
		{"inside", body(3) + strings.Repeat(" ", 60000) + "garbage", 400, "bad_json", "after the JSON value"},
		{"over", body(ledger.CreditsMax + 1), 400, "bad_credits", fmt.Sprint("from 1 to ", int64(ledger.CreditsMax))},
		{"max", body(ledger.CreditsMax), 202, "", ""},
		{"padded", body(3) + strings.Repeat("\n", api.JSONBodyMax-len(body(3))), 202, "", ""},
	}
	for _, tt := range tests {
		a := h.do(t, "POST", "/v1/purchases", testBuyer, bytes.NewReader([]byte(tt.body)),
			map[string]string{"Content-Type": "application/json", "Idempotency-Key": tt.key})
		var e api.ErrorBody
		json.Unmarshal(a.body, &e)
		if a.status != tt.status || e.Error.Code != tt.code || !strings.Contains(e.Error.Message, tt.message) {
			t.Errorf("%s: %d %s, want %d %s %q", tt.key, a.status, a.body, tt.status, tt.code, tt.message)
		}
		_, err := h.ledger.GetPurchase(context.Background(), tt.key)
		if recorded := err == nil; recorded != (tt.status == 202) {
			t.Errorf("%s: recorded %v after %d", tt.key, recorded, a.status)
		}
	}
	p, err := h.ledger.GetPurchase(context.Background(), "max")
	if err != nil || p.Credits != ledger.CreditsMax {
		t.Fatalf("purchase of CreditsMax: %+v, %v", p, err)
	}
}
