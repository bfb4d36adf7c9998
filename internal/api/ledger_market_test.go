package api

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
)

// Tokens of the market tests: accounts' own tokens, a broker, a reader.
const (
	mAliceTok  = "purchase-alice-0123456789"
	mBobTok    = "purchase-bob-0123456789"
	mCarolTok  = "read-purchase-carol-01234"
	mReadTok   = "read-only-token-0123456789"
	mBrokerTok = "broker-token-0123456789"
)

type marketBundle struct {
	*ledgerBundle
}

// setupMarket serves RegisterLedger with bound, broker and read tokens.
func setupMarket(t *testing.T) *marketBundle {
	t.Helper()
	rdb := harness.RedisClient(t, harness.Redis(t))
	file := filepath.Join(t.TempDir(), "tokens")
	lines := "purchase@alice " + mAliceTok + "\npurchase@bob " + mBobTok + "\nread,purchase@carol " + mCarolTok +
		"\nread " + mReadTok + "\nbroker " + mBrokerTok + "\n"
	if err := os.WriteFile(file, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := LoadTokens(adminTok, file)
	if err != nil {
		t.Fatal(err)
	}
	return &marketBundle{serveLedger(t, rdb, tokens)}
}

// as sends a request with token (none when empty).
func (b *marketBundle) as(t *testing.T, token, method, path, body string) ledgerAnswer {
	t.Helper()
	a := harness.Request(t, method, b.srv.URL+path, token, strings.NewReader(body), map[string]string{"Content-Type": "application/json"})
	return ledgerAnswer{a.Status, a.Body}
}

// newAsset records an asset; price "" leaves it unpriced.
func (b *marketBundle) newAsset(t *testing.T, key, price string) string {
	t.Helper()
	md := map[string]string{}
	if price != "" {
		md["price"] = price
	}
	r, _, err := b.assets.Put(context.Background(), asset.Record{Name: key, Type: "generic", Path: key, S3Bucket: "b", S3Key: "generic/" + key, SHA256: "s", Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// buy applies a purchase in the ledger (as the worker does) and wants it
// to succeed.
func (b *marketBundle) buy(t *testing.T, pid, assetID, buyer string, credits int64) {
	t.Helper()
	ctx := context.Background()
	if credits > 0 {
		if _, err := b.led.Grant(ctx, "for-"+pid, buyer, credits); err != nil {
			t.Fatal(err)
		}
	}
	r, err := b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: pid, AssetID: assetID, BuyerID: buyer, Credits: credits})
	if err != nil || r.Status != ledger.StatusSucceeded {
		t.Fatalf("%s buys %s: %+v, %v", buyer, assetID, r, err)
	}
}

func (a ledgerAnswer) record(t *testing.T) asset.Record {
	t.Helper()
	var r asset.Record
	if err := json.Unmarshal(a.body, &r); err != nil || a.status != 200 {
		t.Fatalf("want a record: %d %s", a.status, a.body)
	}
	return r
}

func show(p *int64) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

// TestListingOverHTTP: an owner lists and unlists its own assets (a token
// bound to it, or admin); anyone else is refused, an asset nobody owns is
// the house's to price, and each answer says why.
func TestListingOverHTTP(t *testing.T) {
	t.Parallel()
	b := setupMarket(t)
	mine := b.newAsset(t, "mine", "2")
	b.buy(t, "p-mine", mine, "alice", 2)
	unowned := b.newAsset(t, "unowned", "")
	listing := "/v1/assets/" + mine + "/listing"
	tests := []struct {
		name, token, method, path, body string
		status                          int
		code, message                   string
	}{
		{"no token", "", "PUT", listing, `{"credits": 5}`, 401, "unauthorized", ""},
		{"a reader", mReadTok, "PUT", listing, `{"credits": 5}`, 403, "forbidden", ""},
		{"a broker", mBrokerTok, "PUT", listing, `{"credits": 5}`, 403, "forbidden", ""},
		{"another account", mBobTok, "PUT", listing, `{"credits": 5}`, 403, "not_owner", "only its owner"},
		{"another account unlists", mBobTok, "DELETE", listing, ``, 403, "not_owner", "only its owner"},
		{"nobody owns it", mAliceTok, "PUT", "/v1/assets/" + unowned + "/listing", `{"credits": 5}`, 409, "not_owned", "POST /v1/assets/" + unowned + "/price"},
		{"nobody owns it, admin", adminTok, "DELETE", "/v1/assets/" + unowned + "/listing", ``, 409, "not_owned", "sold by the house"},
		{"unknown asset", mAliceTok, "PUT", "/v1/assets/0123456789abcdef0123/listing", `{"credits": 5}`, 404, "asset_not_found", ""},
		{"not an asset ID", mAliceTok, "PUT", "/v1/assets/nope/listing", `{"credits": 5}`, 404, "asset_not_found", ""},
		{"negative", mAliceTok, "PUT", listing, `{"credits": -1}`, 400, "bad_credits", "from 0 (free)"},
		{"a string", mAliceTok, "PUT", listing, `{"credits": "5"}`, 400, "bad_credits", ""},
		{"a fraction", mAliceTok, "PUT", listing, `{"credits": 1.5}`, 400, "bad_credits", ""},
		{"too large", mAliceTok, "PUT", listing, fmt.Sprintf(`{"credits": %d}`, int64(ledger.CreditsMax)+1), 400, "bad_credits", ""},
		{"missing", mAliceTok, "PUT", listing, `{}`, 400, "bad_credits", "missing"},
		{"not JSON", mAliceTok, "PUT", listing, `credits=5`, 400, "bad_json", ""},
	}
	for _, tt := range tests {
		a := b.as(t, tt.token, tt.method, tt.path, tt.body)
		if e := a.err(); a.status != tt.status || e.Error.Code != tt.code || !strings.Contains(e.Error.Message, tt.message) {
			t.Errorf("%s: %d %s, want %d %s %q", tt.name, a.status, a.body, tt.status, tt.code, tt.message)
		}
	}
	if r, _ := b.assets.Get(context.Background(), mine); r.Listing != nil {
		t.Fatalf("refused requests listed it: %s", show(r.Listing))
	}
	for _, step := range []struct {
		token, method, body, want string
	}{
		{mAliceTok, "PUT", `{"credits": 5}`, "5"},
		{mAliceTok, "PUT", `{"credits": 5}`, "5"}, // the same again: idempotent
		{adminTok, "PUT", `{"credits": 0}`, "0"},
		{mAliceTok, "DELETE", ``, "none"},
		{mAliceTok, "DELETE", ``, "none"},
		{adminTok, "PUT", `{"credits": 9}`, "9"},
	} {
		if r := b.as(t, step.token, step.method, listing, step.body).record(t); show(r.Listing) != step.want || r.Owner != "alice" {
			t.Fatalf("%s %s: listing %s owner %q, want %s", step.method, step.body, show(r.Listing), r.Owner, step.want)
		}
	}
	if rep, err := b.led.Verify(context.Background()); err != nil || !rep.OK() || rep.Listings != 4 {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}

// TestPriceOverHTTP: admin prices what the house sells (0: free), and
// removes the price; an owned asset has no price to set.
func TestPriceOverHTTP(t *testing.T) {
	t.Parallel()
	b := setupMarket(t)
	unowned := b.newAsset(t, "unowned", "")
	mine := b.newAsset(t, "mine", "1")
	b.buy(t, "p-mine", mine, "alice", 1)
	price := "/v1/assets/" + unowned + "/price"
	if a := b.as(t, mAliceTok, "POST", price, `{"credits": 3}`); a.status != 403 || a.err().Error.Code != "forbidden" {
		t.Fatalf("price by an account: %d %s", a.status, a.body)
	}
	if a := b.as(t, mAliceTok, "DELETE", price, ``); a.status != 403 {
		t.Fatalf("price removed by an account: %d %s", a.status, a.body)
	}
	a := b.as(t, adminTok, "POST", price, `{"credits": 0}`)
	if r := a.record(t); show(r.Price) != "0" || !strings.Contains(string(a.body), `"price": 0`) {
		t.Fatalf("free: %s", a.body)
	}
	if r := b.as(t, adminTok, "POST", price, `{"credits": 12}`).record(t); show(r.Price) != "12" {
		t.Fatalf("price: %s", show(r.Price))
	}
	a = b.as(t, adminTok, "DELETE", price, ``)
	if r := a.record(t); r.Price != nil || strings.Contains(string(a.body), `"price"`) {
		t.Fatalf("removed: %s", a.body)
	}
	if a := b.as(t, adminTok, "POST", "/v1/assets/"+mine+"/price", `{"credits": 3}`); a.status != 409 || a.err().Error.Code != "owned" ||
		!strings.Contains(a.err().Error.Message, "/v1/assets/"+mine+"/listing") {
		t.Fatalf("price of an owned asset: %d %s", a.status, a.body)
	}
	if a := b.as(t, adminTok, "DELETE", "/v1/assets/0123456789abcdef0123/price", ``); a.status != 404 || a.err().Error.Code != "asset_not_found" {
		t.Fatalf("price of an unknown asset: %d %s", a.status, a.body)
	}
	if a := b.as(t, adminTok, "POST", price, `{"credits": -1}`); a.status != 400 || a.err().Error.Code != "bad_credits" {
		t.Fatalf("negative price: %d %s", a.status, a.body)
	}
}

// TestAccountsAndPurchasesAreTheirOwn: a bound token reads its own account
// (403 not_your_account for another) and its own purchases (another
// account's answers 404 like an unknown one); read, broker and admin
// tokens read any.
func TestAccountsAndPurchasesAreTheirOwn(t *testing.T) {
	t.Parallel()
	b := setupMarket(t)
	id := b.newAsset(t, "a", "4")
	b.buy(t, "p-secret-1", id, "alice", 4)
	for _, tt := range []struct {
		token, path string
		status      int
		code        string
	}{
		{mAliceTok, "/v1/accounts/alice", 200, ""},
		{mAliceTok, "/v1/accounts/bob", 403, "not_your_account"},
		{mCarolTok, "/v1/accounts/alice", 403, "not_your_account"},
		{mBobTok, "/v1/accounts/alice", 403, "not_your_account"},
		{mReadTok, "/v1/accounts/alice", 200, ""},
		{mBrokerTok, "/v1/accounts/alice", 200, ""},
		{adminTok, "/v1/accounts/alice", 200, ""},
		{mAliceTok, "/v1/purchases/p-secret-1", 200, ""},
		{mBobTok, "/v1/purchases/p-secret-1", 404, "not_found"},
		{mCarolTok, "/v1/purchases/p-secret-1", 404, "not_found"},
		{mBobTok, "/v1/purchases/no-such-purchase", 404, "not_found"},
		{mReadTok, "/v1/purchases/p-secret-1", 200, ""},
		{mBrokerTok, "/v1/purchases/p-secret-1", 200, ""},
		{adminTok, "/v1/purchases/p-secret-1", 200, ""},
	} {
		a := b.as(t, tt.token, "GET", tt.path, "")
		if a.status != tt.status || a.err().Error.Code != tt.code {
			t.Errorf("%s as %s: %d %s, want %d %s", tt.path, tt.token, a.status, a.body, tt.status, tt.code)
		}
		if tt.status == 404 && strings.Contains(string(a.body), "alice") {
			t.Errorf("%s as %s tells about alice: %s", tt.path, tt.token, a.body)
		}
	}
	// Another account's purchase and an unknown one read the same.
	other, unknown := b.as(t, mBobTok, "GET", "/v1/purchases/p-secret-1", ""), b.as(t, mBobTok, "GET", "/v1/purchases/nothing-here", "")
	if strings.ReplaceAll(string(other.body), "p-secret-1", "X") != strings.ReplaceAll(string(unknown.body), "nothing-here", "X") {
		t.Fatalf("another's purchase %s, an unknown one %s", other.body, unknown.body)
	}
}

// TestHistoryOverHTTP: every sale of an asset, oldest first.
func TestHistoryOverHTTP(t *testing.T) {
	t.Parallel()
	b := setupMarket(t)
	ctx := context.Background()
	id := b.newAsset(t, "story", "3")
	b.buy(t, "s1", id, "alice", 3)
	if _, err := b.led.SetListing(ctx, id, "alice", 8, "alice"); err != nil {
		t.Fatal(err)
	}
	b.buy(t, "s2", id, "bob", 8)
	if _, err := b.led.SetListing(ctx, id, "bob", 0, "bob"); err != nil {
		t.Fatal(err)
	}
	b.buy(t, "s3", id, "carol", 0)
	a := b.as(t, mCarolTok, "GET", "/v1/assets/"+id+"/history", "")
	var h SalesHistory
	if err := json.Unmarshal(a.body, &h); err != nil || a.status != 200 || h.AssetID != id || len(h.Sales) != 3 {
		t.Fatalf("history: %d %s", a.status, a.body)
	}
	var got []string
	for _, s := range h.Sales {
		got = append(got, fmt.Sprintf("%s>%s:%d:%s", s.Seller, s.Buyer, s.Credits, s.PurchaseID))
		if s.EntryID == "" || s.At.IsZero() {
			t.Errorf("sale without entry or time: %+v", s)
		}
	}
	if strings.Join(got, " ") != "house>alice:3:s1 alice>bob:8:s2 bob>carol:0:s3" {
		t.Fatalf("sales %v", got)
	}
	for _, key := range []string{`"at"`, `"seller"`, `"buyer"`, `"credits"`, `"purchase_id"`, `"entry_id"`} {
		if !strings.Contains(string(a.body), key) {
			t.Errorf("history lacks %s: %s", key, a.body)
		}
	}
	never := b.newAsset(t, "never", "")
	if a := b.as(t, mReadTok, "GET", "/v1/assets/"+never+"/history", ""); a.status != 200 || !strings.Contains(string(a.body), `"sales": []`) {
		t.Fatalf("never sold: %d %s", a.status, a.body)
	}
	for _, tt := range []struct {
		token, path string
		status      int
		code        string
	}{
		{mReadTok, "/v1/assets/0123456789abcdef0123/history", 404, "asset_not_found"},
		{mReadTok, "/v1/assets/nope/history", 404, "asset_not_found"},
		{mAliceTok, "/v1/assets/" + id + "/history", 403, "forbidden"}, // purchase only, no read
		{"", "/v1/assets/" + id + "/history", 401, "unauthorized"},
	} {
		if a := b.as(t, tt.token, "GET", tt.path, ""); a.status != tt.status || a.err().Error.Code != tt.code {
			t.Errorf("%s as %q: %d %s", tt.path, tt.token, a.status, a.body)
		}
	}
}
