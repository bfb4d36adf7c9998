package market

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/worker/task"
)

func TestGrantsAndAccounts(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t)
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
		if a := grant(tt.token, tt.key, tt.body); a.Status != tt.status || a.ErrorCode() != tt.code {
			t.Errorf("grant %s %q: %d %s, want %d %s", tt.key, tt.body, a.Status, a.Body, tt.status, tt.code)
		}
	}
	first, again := grant(testAdmin, "g1", `{"credits": 5}`), grant(testAdmin, "g1", `{"credits": 5}`)
	var g1, g2 ledger.GrantResult
	first.JSON(t, &g1)
	again.JSON(t, &g2)
	if first.Status != 201 || g1.EntryID == "" || g2.EntryID != g1.EntryID || g2.Balance != 5 {
		t.Fatalf("grant and repeat: %s / %s", first.Body, again.Body)
	}
	if a := grant(testAdmin, "g1", `{"credits": 6}`); a.Status != 409 {
		t.Fatalf("same key, other credits: %d %s", a.Status, a.Body)
	}
	var acct ledger.Account
	a := h.do(t, "GET", "/v1/accounts/alice", testBroker, nil, nil)
	a.JSON(t, &acct)
	if acct.Balance != 5 || len(acct.Entries) != 1 || acct.Entries[0].Kind != "grant" {
		t.Fatalf("account: %s", a.Body)
	}
	// A token bound to zed reads zed's account only.
	if a := h.do(t, "GET", "/v1/accounts/alice", testBuyer, nil, nil); a.Status != 403 || a.ErrorCode() != "not_your_account" {
		t.Fatalf("another account with a bound token: %d %s", a.Status, a.Body)
	}
	if a := h.do(t, "GET", "/v1/accounts/zed", testBuyer, nil, nil); a.Status != 200 {
		t.Fatalf("its own account with a bound token: %d %s", a.Status, a.Body)
	}
	a = h.do(t, "GET", "/v1/accounts/nobody-yet", testReader, nil, nil)
	a.JSON(t, &acct)
	if a.Status != 200 || acct.Balance != 0 {
		t.Fatalf("new account: %s", a.Body)
	}
	if a := h.do(t, "GET", "/v1/accounts/bad%20id", testReader, nil, nil); a.Status != 400 {
		t.Fatalf("bad account id: %d", a.Status)
	}
}

func TestPurchasesOverHTTP(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t)
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
		{testBuyer, "p1", `{"asset_id": "` + rec.ID + `", "buyer_id": "zed", "credits": -1}`, 400, "bad_credits"},
		{testBuyer, "p1", `{"asset_id": "nope", "buyer_id": "zed", "credits": 1}`, 400, "invalid"},
		{testBuyer, "p 1", body, 400, "invalid"},
		{testBuyer, "p1", `[]`, 400, "bad_json"},
	} {
		if a := post(tt.token, tt.key, tt.body); a.Status != tt.status || a.ErrorCode() != tt.code {
			t.Errorf("%q %q: %d %s, want %d %s", tt.key, tt.body, a.Status, a.Body, tt.status, tt.code)
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
		var pa api.PurchaseAccepted
		a.JSON(t, &pa)
		if a.Status != 202 || pa.PurchaseID != "p1" || pa.Status != ledger.StatusPending || pa.TaskID != task.PurchaseTaskID("p1") {
			t.Fatalf("concurrent send: %d %s", a.Status, a.Body)
		}
	}
	if info, err := h.insp.GetQueueInfo(task.QueuePurchases); err != nil || info.Size != 1 {
		t.Fatalf("queued purchases: %+v %v", info, err)
	}
	if a := post(testBuyer, "p1", strings.Replace(body, `"credits": 3`, `"credits": 4`, 1)); a.Status != 409 {
		t.Fatalf("same key, other credits: %d %s", a.Status, a.Body)
	}
	// The worker applies it (here: the ledger, as the worker's handler does).
	if _, err := h.ledger.Apply(context.Background(), ledger.PurchaseRequest{PurchaseID: "p1", AssetID: rec.ID, BuyerID: "zed", Credits: 3}); err != nil {
		t.Fatal(err)
	}
	var got ledger.PurchaseResult
	a := h.do(t, "GET", "/v1/purchases/p1", testReader, nil, nil)
	a.JSON(t, &got)
	if got.Status != ledger.StatusRejected || got.Reason != ledger.ReasonNotForSale {
		t.Fatalf("status: %s", a.Body)
	}
	again := post(testBuyer, "p1", body)
	var replay ledger.PurchaseResult
	json.Unmarshal(again.Body, &replay)
	if again.Status != 200 || again.Header.Get("Idempotent-Replayed") != "true" || replay != got {
		t.Fatalf("repeat after the result: %d %s", again.Status, again.Body)
	}
	if a := h.do(t, "GET", "/v1/purchases/unknown", testReader, nil, nil); a.Status != 404 {
		t.Fatalf("unknown purchase: %d", a.Status)
	}
	// An admin sets a price; a purchase must then pay exactly that.
	if a := h.do(t, "POST", "/v1/assets/"+rec.ID+"/price", testBuyer, strings.NewReader(`{"credits": 2}`), nil); a.Status != 403 {
		t.Fatalf("price by a buyer: %d", a.Status)
	}
	a = h.do(t, "POST", "/v1/assets/"+rec.ID+"/price", testAdmin, strings.NewReader(`{"credits": 2}`), nil)
	var priced asset.Record
	a.JSON(t, &priced)
	if a.Status != 200 || priced.Price == nil || *priced.Price != 2 {
		t.Fatalf("set price: %d %s", a.Status, a.Body)
	}
	h.ledger.Grant(context.Background(), "gz", "zed", 10)
	r, _ := h.ledger.Apply(context.Background(), ledger.PurchaseRequest{PurchaseID: "p2", AssetID: rec.ID, BuyerID: "zed", Credits: 3})
	if r.Reason != ledger.ReasonWrongPrice {
		t.Fatalf("after the price: %+v", r)
	}
	for _, bad := range []string{`{"credits": -1}`, `{"credits": "2"}`, `{}`} {
		if a := h.do(t, "POST", "/v1/assets/"+rec.ID+"/price", testAdmin, strings.NewReader(bad), nil); a.Status != 400 {
			t.Errorf("price %s: %d", bad, a.Status)
		}
	}
	if a := h.do(t, "POST", "/v1/assets/0123456789abcdef0123/price", testAdmin, strings.NewReader(`{"credits": 1}`), nil); a.Status != 404 {
		t.Fatalf("price of a missing asset: %d", a.Status)
	}
}

// TestPurchaseBodyAndCredits: POST /v1/purchases reads its body like the
// ledger's routes (one JSON object, at most api.JSONBodyMax bytes, nothing
// after it: the security review's {...} + 5 MB of spaces + garbage once got
// through) and takes amounts from 0 (free) to ledger.CreditsMax.
func TestPurchaseBodyAndCredits(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t)
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
		{"over", body(ledger.CreditsMax + 1), 400, "bad_credits", fmt.Sprint("from 0 (free) to ", int64(ledger.CreditsMax))},
		{"negative", body(-1), 400, "bad_credits", fmt.Sprint("from 0 (free) to ", int64(ledger.CreditsMax))},
		{"max", body(ledger.CreditsMax), 202, "", ""},
		{"padded", body(3) + strings.Repeat("\n", api.JSONBodyMax-len(body(3))), 202, "", ""},
	}
	for _, tt := range tests {
		a := h.do(t, "POST", "/v1/purchases", testBuyer, bytes.NewReader([]byte(tt.body)),
			map[string]string{"Content-Type": "application/json", "Idempotency-Key": tt.key})
		var e api.ErrorBody
		json.Unmarshal(a.Body, &e)
		if a.Status != tt.status || e.Error.Code != tt.code || !strings.Contains(e.Error.Message, tt.message) {
			t.Errorf("%s: %d %s, want %d %s %q", tt.key, a.Status, a.Body, tt.status, tt.code, tt.message)
		}
		_, err := h.ledger.GetPurchase(context.Background(), tt.key)
		if recorded := err == nil; recorded != (tt.status == 202) {
			t.Errorf("%s: recorded %v after %d", tt.key, recorded, a.Status)
		}
	}
	p, err := h.ledger.GetPurchase(context.Background(), "max")
	if err != nil || p.Credits != ledger.CreditsMax {
		t.Fatalf("purchase of CreditsMax: %+v, %v", p, err)
	}
}

// work applies the queued purchase tasks as a worker does: decode the
// payload (task.DecodePurchase), apply it to the ledger, remove the task.
func (h *httpBundle) work(t *testing.T) {
	t.Helper()
	tasks, err := h.insp.ListPendingTasks(task.QueuePurchases, asynq.PageSize(1000))
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range tasks {
		p, err := task.DecodePurchase(ti.Payload)
		if err != nil {
			t.Fatalf("task %s: %v", ti.ID, err)
		}
		if _, err := h.ledger.Apply(context.Background(), ledger.PurchaseRequest{PurchaseID: p.PurchaseID, AssetID: p.AssetID, BuyerID: p.BuyerID, Credits: p.Credits}); err != nil {
			t.Fatalf("apply %s: %v", p.PurchaseID, err)
		}
		if err := h.insp.DeleteTask(task.QueuePurchases, ti.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// market sets up one asset in a market state: "listed" (olive lists it at
// 4), "unlisted" (olive owns it), "priced" (the house sells it at 3),
// "unpriced", "price 0", "listing 0".
func (h *httpBundle) market(t *testing.T, key, state string) string {
	t.Helper()
	ctx := context.Background()
	price := map[string]string{"priced": "3", "price 0": "0", "listed": "1", "unlisted": "1", "listing 0": "1"}[state]
	md := map[string]string{}
	if price != "" {
		md["price"] = price
	}
	rec, _, err := h.assets.Put(ctx, asset.Record{Name: key, Type: "generic", Path: key, S3Bucket: "b", S3Key: "generic/" + key, SHA256: "s", Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	switch state {
	case "listed", "unlisted", "listing 0":
		if _, err := h.ledger.Grant(ctx, "olive-"+key, "olive", 1); err != nil {
			t.Fatal(err)
		}
		if r, err := h.ledger.Apply(ctx, ledger.PurchaseRequest{PurchaseID: "olive-" + key, AssetID: rec.ID, BuyerID: "olive", Credits: 1}); err != nil || r.Status != ledger.StatusSucceeded {
			t.Fatalf("olive buys %s: %+v, %v", key, r, err)
		}
	}
	switch state {
	case "listed":
		_, err = h.ledger.SetListing(ctx, rec.ID, "olive", 4, "olive")
	case "listing 0":
		_, err = h.ledger.SetListing(ctx, rec.ID, "olive", 0, "olive")
	}
	if err != nil {
		t.Fatal(err)
	}
	return rec.ID
}

// TestPurchaseMatrix: who buys (a token bound to zed, naming zed or no
// one or someone else; a broker or admin naming a buyer or not; a reader)
// times what is for sale (listed, unlisted, unowned priced, unowned
// unpriced). The buyer is always the one the request proved; the ledger's
// rules decide the rest.
func TestPurchaseMatrix(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t)
	ctx := context.Background()
	for _, b := range []string{"zed", "yan", "xia"} {
		if _, err := h.ledger.Grant(ctx, "g-"+b, b, 100); err != nil {
			t.Fatal(err)
		}
	}
	callers := []struct {
		name, token, buyerField string
		status                  int
		code, buyer             string
	}{
		{"bound, no buyer_id", testBuyer, "", 202, "", "zed"},
		{"bound, its own buyer_id", testBuyer, "zed", 202, "", "zed"},
		{"bound, another buyer_id", testBuyer, "yan", 403, "wrong_buyer", ""},
		{"broker for yan", testBroker, "yan", 202, "", "yan"},
		{"broker, no buyer_id", testBroker, "", 400, "buyer_required", ""},
		{"admin for xia", testAdmin, "xia", 202, "", "xia"},
		{"admin, no buyer_id", testAdmin, "", 400, "buyer_required", ""},
		{"reader", testReader, "zed", 403, "forbidden", ""},
		{"ingest", testIngest, "zed", 403, "forbidden", ""},
		{"no token", "", "zed", 401, "unauthorized", ""},
	}
	states := []struct {
		state   string
		credits int64
		reason  string // "" succeeds
		seller  string
	}{
		{"listed", 4, "", "olive"},
		{"unlisted", 1, ledger.ReasonNotForSale, ""},
		{"priced", 3, "", "house"},
		{"unpriced", 1, ledger.ReasonNotForSale, ""},
	}
	type check struct {
		name, pid, asset, buyer, reason, seller string
		credits                                 int64
	}
	var checks []check
	for ci, c := range callers {
		for si, st := range states {
			key := fmt.Sprintf("m%d-%d", ci, si)
			id := h.market(t, key, st.state)
			body := fmt.Sprintf(`{"asset_id": %q, "credits": %d}`, id, st.credits)
			if c.buyerField != "" {
				body = fmt.Sprintf(`{"asset_id": %q, "buyer_id": %q, "credits": %d}`, id, c.buyerField, st.credits)
			}
			a := h.do(t, "POST", "/v1/purchases", c.token, strings.NewReader(body), map[string]string{"Content-Type": "application/json", "Idempotency-Key": "buy-" + key})
			name := c.name + " / " + st.state
			if a.Status != c.status || a.ErrorCode() != c.code {
				t.Errorf("%s: %d %s, want %d %s", name, a.Status, a.Body, c.status, c.code)
				continue
			}
			if c.status != 202 {
				if _, err := h.ledger.GetPurchase(ctx, "buy-"+key); err == nil {
					t.Errorf("%s: a refused request recorded a purchase", name)
				}
				continue
			}
			var pa api.PurchaseAccepted
			a.JSON(t, &pa)
			if pa.BuyerID != c.buyer || pa.Status != ledger.StatusPending {
				t.Errorf("%s: accepted %+v, want buyer %s", name, pa, c.buyer)
			}
			checks = append(checks, check{name, "buy-" + key, id, c.buyer, st.reason, st.seller, st.credits})
		}
	}
	h.work(t)
	for _, c := range checks {
		p, err := h.ledger.GetPurchase(ctx, c.pid)
		rec, _ := h.assets.Get(ctx, c.asset)
		switch {
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.reason == "" && (p.Status != ledger.StatusSucceeded || p.Seller != c.seller || p.BuyerID != c.buyer || rec.Owner != c.buyer || rec.Listing != nil):
			t.Errorf("%s: %+v, owner %q listing %v; want bought by %s from %s", c.name, p, rec.Owner, rec.Listing, c.buyer, c.seller)
		case c.reason != "" && (p.Status != ledger.StatusRejected || p.Reason != c.reason || rec.Owner == c.buyer):
			t.Errorf("%s: %+v; want rejected %s", c.name, p, c.reason)
		}
	}
	// zed bought one listed (4) and one priced (3) asset twice over.
	if a, _ := h.ledger.Account(ctx, "zed", 0); a.Balance != 100-2*(4+3) {
		t.Errorf("zed has %d", a.Balance)
	}
	if rep, err := h.ledger.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}

// TestFreePurchasesOverHTTP: price 0 and listing 0 are free: a purchase of
// 0 credits is accepted, queued and applied, and moves ownership through
// the ledger (an entry of 0). Paying anything else is wrong_price.
func TestFreePurchasesOverHTTP(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t)
	ctx := context.Background()
	free, listedFree := h.market(t, "free", "price 0"), h.market(t, "lfree", "listing 0")
	post := func(key, id string, credits int64) answer {
		return h.do(t, "POST", "/v1/purchases", testBuyer, strings.NewReader(fmt.Sprintf(`{"asset_id": %q, "credits": %d}`, id, credits)),
			map[string]string{"Content-Type": "application/json", "Idempotency-Key": key})
	}
	for _, p := range []struct {
		key, id string
		credits int64
	}{{"f-wrong", free, 1}, {"lf-wrong", listedFree, 1}, {"f", free, 0}, {"lf", listedFree, 0}} {
		if a := post(p.key, p.id, p.credits); a.Status != 202 {
			t.Fatalf("%s: %d %s (a free purchase must be queued: worker/task must take credits 0)", p.key, a.Status, a.Body)
		}
	}
	h.work(t)
	for key, want := range map[string]string{"f-wrong": ledger.ReasonWrongPrice, "lf-wrong": ledger.ReasonWrongPrice, "f": "", "lf": ""} {
		p, err := h.ledger.GetPurchase(ctx, key)
		if err != nil || p.Reason != want || (want == "") != (p.Status == ledger.StatusSucceeded) {
			t.Errorf("%s: %+v, %v; want %q", key, p, err, want)
		}
	}
	for _, id := range []string{free, listedFree} {
		if rec, _ := h.assets.Get(ctx, id); rec.Owner != "zed" || rec.Listing != nil {
			t.Errorf("%s: owner %q listing %v", id, rec.Owner, rec.Listing)
		}
	}
	a, err := h.ledger.Account(ctx, "zed", 10)
	if err != nil || a.Balance != 0 || len(a.Entries) != 2 || a.Entries[0].Amount != 0 || a.Entries[0].Kind != ledger.KindPurchase {
		t.Fatalf("zed: %+v, %v", a, err)
	}
	if rep, err := h.ledger.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}

// TestPurchaseKeysAcrossBuyers: a purchase ID is one purchase: a bound
// token that sends another buyer's key gets 409 without that purchase's
// parameters; the same purchase again replays it.
func TestPurchaseKeysAcrossBuyers(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t)
	id := h.market(t, "k", "priced")
	hdr := map[string]string{"Content-Type": "application/json", "Idempotency-Key": "shared-key"}
	if a := h.do(t, "POST", "/v1/purchases", testBroker, strings.NewReader(fmt.Sprintf(`{"asset_id": %q, "buyer_id": "yan", "credits": 3}`, id)), hdr); a.Status != 202 {
		t.Fatalf("broker: %d %s", a.Status, a.Body)
	}
	a := h.do(t, "POST", "/v1/purchases", testBuyer, strings.NewReader(fmt.Sprintf(`{"asset_id": %q, "credits": 3}`, id)), hdr)
	if a.Status != 409 || a.ErrorCode() != "idempotency_conflict" || strings.Contains(string(a.Body), "yan") {
		t.Fatalf("zed with yan's key: %d %s", a.Status, a.Body)
	}
	if a := h.do(t, "GET", "/v1/purchases/shared-key", testBuyer, nil, nil); a.Status != 404 {
		t.Fatalf("zed reads yan's purchase: %d %s", a.Status, a.Body)
	}
	// Nor through its task: the payload and result are yan's.
	taskPath := "/v1/tasks/" + task.PurchaseTaskID("shared-key")
	if a := h.do(t, "GET", taskPath, testBuyer, nil, nil); a.Status != 404 || strings.Contains(string(a.Body), "yan") {
		t.Fatalf("zed reads yan's purchase task: %d %s", a.Status, a.Body)
	}
	for _, tok := range []string{testAdmin, testReader} {
		if a := h.do(t, "GET", taskPath, tok, nil, nil); a.Status != 200 {
			t.Fatalf("unbound token reads the purchase task: %d %s", a.Status, a.Body)
		}
	}
	again := h.do(t, "POST", "/v1/purchases", testBroker, strings.NewReader(fmt.Sprintf(`{"asset_id": %q, "buyer_id": "yan", "credits": 3}`, id)), hdr)
	if again.Status != 202 {
		t.Fatalf("broker again: %d %s", again.Status, again.Body)
	}
	if a := h.do(t, "POST", "/v1/purchases", testBroker, strings.NewReader(fmt.Sprintf(`{"asset_id": %q, "buyer_id": "xia", "credits": 3}`, id)), hdr); a.Status != 409 || !strings.Contains(string(a.Body), "yan") {
		t.Fatalf("broker, other buyer: %d %s", a.Status, a.Body)
	}
}
