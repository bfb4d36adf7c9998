package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
)

type bundle struct {
	rdb    *redis.Client
	assets *asset.Store
	led    *ledger.Store
}

func setup(t *testing.T) *bundle {
	t.Helper()
	rdb := harness.RedisClient(t, harness.Redis(t))
	return &bundle{rdb: rdb, assets: asset.NewStore(rdb, "dab:"), led: ledger.New(rdb, "dab:", "house")}
}

// newAsset records an asset and returns its ID; price "" means none.
func (b *bundle) newAsset(t *testing.T, key, price string) string {
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

func (b *bundle) grant(t *testing.T, account string, n int64) {
	t.Helper()
	if _, err := b.led.Grant(context.Background(), "g-"+account+fmt.Sprint(n), account, n); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) balance(t *testing.T, account string) int64 {
	t.Helper()
	a, err := b.led.Account(context.Background(), account, 10)
	if err != nil {
		t.Fatal(err)
	}
	return a.Balance
}

func (b *bundle) verify(t *testing.T) ledger.Report {
	t.Helper()
	r, err := b.led.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("ledger verify: %v", r.Problems)
	}
	return r
}

func TestGrantIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	g1, err := b.led.Grant(ctx, "grant-1", "alice", 100)
	if err != nil || g1.Balance != 100 {
		t.Fatalf("grant: %+v %v", g1, err)
	}
	g2, err := b.led.Grant(ctx, "grant-1", "alice", 100)
	if err != nil || g2.EntryID != g1.EntryID || g2.Balance != 100 {
		t.Fatalf("repeat: %+v %v", g2, err)
	}
	if _, err := b.led.Grant(ctx, "grant-1", "alice", 5); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("same key, other amount: %v", err)
	}
	if b.balance(t, "alice") != 100 || b.balance(t, ledger.Issuance) != -100 || b.balance(t, "never-seen") != 0 {
		t.Fatal("balances wrong")
	}
	r := b.verify(t)
	if r.Entries != 1 || r.Issued != 100 {
		t.Fatalf("report %+v", r)
	}
}

func TestSamePurchaseThousandTimes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.grant(t, "alice", 100)
	id := b.newAsset(t, "a", "10")
	req := ledger.PurchaseRequest{PurchaseID: "p-1", AssetID: id, BuyerID: "alice", Credits: 10}
	results := make([]ledger.PurchaseResult, 1000)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := b.led.Apply(context.Background(), req)
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	for _, r := range results {
		if r != results[0] || r.Status != ledger.StatusSucceeded || r.Seller != "house" {
			t.Fatalf("results differ or failed: %+v vs %+v", r, results[0])
		}
	}
	if b.balance(t, "alice") != 90 || b.balance(t, "house") != 10 {
		t.Fatalf("balances alice %d house %d", b.balance(t, "alice"), b.balance(t, "house"))
	}
	if rep := b.verify(t); rep.Entries != 2 || rep.Purchases != 1 {
		t.Fatalf("report %+v", rep)
	}
	rec, _ := b.assets.Get(context.Background(), id)
	if rec.Owner != "alice" || rec.Price == nil || *rec.Price != 10 || rec.Listing != nil {
		t.Fatalf("asset %+v", rec)
	}
}

func TestNoOverdraftUnderConcurrency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.grant(t, "bob", 500)
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = b.newAsset(t, fmt.Sprintf("x%d", i), "1")
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := b.led.Apply(context.Background(), ledger.PurchaseRequest{PurchaseID: fmt.Sprintf("buy-%d", i), AssetID: id, BuyerID: "bob", Credits: 1})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			outcomes[r.Status+" "+r.Reason]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if outcomes["succeeded "] != 500 || outcomes["rejected insufficient_credits"] != 500 {
		t.Fatalf("outcomes %v", outcomes)
	}
	if b.balance(t, "bob") != 0 {
		t.Fatalf("bob has %d", b.balance(t, "bob"))
	}
	b.verify(t)
}

func TestRejectionsMoveNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.grant(t, "carol", 20)
	priced := b.newAsset(t, "priced", "15")
	cheap := b.newAsset(t, "cheap", "3")
	dear := b.newAsset(t, "dear", "21")
	unpriced := b.newAsset(t, "unpriced", "")
	ctx := context.Background()
	buy := func(id, asset, buyer string, n int64) ledger.PurchaseResult {
		r, err := b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: id, AssetID: asset, BuyerID: buyer, Credits: n})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		id, asset, buyer string
		n                int64
		reason           string
	}{
		{"r1", "0123456789abcdef0123", "carol", 5, ledger.ReasonUnknownAsset},
		{"r2", priced, "carol", 5, ledger.ReasonWrongPrice},
		{"r3", dear, "carol", 21, ledger.ReasonInsufficientCredits},
		{"r4", priced, "dave", 15, ledger.ReasonInsufficientCredits},
		{"r5", unpriced, "carol", 1, ledger.ReasonNotForSale},
		{"r6", unpriced, "carol", 0, ledger.ReasonNotForSale},
	}
	for _, tt := range tests {
		r := buy(tt.id, tt.asset, tt.buyer, tt.n)
		if r.Status != ledger.StatusRejected || r.Reason != tt.reason || r.Detail == "" {
			t.Errorf("%s: %+v, want rejected %s", tt.id, r, tt.reason)
		}
		// A rejection is a stored result too.
		if again := buy(tt.id, tt.asset, tt.buyer, tt.n); again != r {
			t.Errorf("%s repeated: %+v vs %+v", tt.id, again, r)
		}
	}
	if r := buy("ok", cheap, "carol", 3); r.Status != ledger.StatusSucceeded {
		t.Fatalf("purchase: %+v", r)
	}
	if r := buy("again", cheap, "carol", 3); r.Reason != ledger.ReasonAlreadyOwner {
		t.Fatalf("second purchase by the owner: %+v", r)
	}
	// Resale: erin buys from carol, who now owns it, once carol lists it.
	b.grant(t, "erin", 10)
	if r := buy("unlisted", cheap, "erin", 3); r.Reason != ledger.ReasonNotForSale {
		t.Fatalf("purchase of an owned, unlisted asset: %+v", r)
	}
	if _, err := b.led.SetListing(ctx, cheap, "carol", 4, "carol"); err != nil {
		t.Fatal(err)
	}
	if r := buy("resale", cheap, "erin", 4); r.Status != ledger.StatusSucceeded || r.Seller != "carol" {
		t.Fatalf("resale: %+v", r)
	}
	if b.balance(t, "carol") != 20-3+4 || b.balance(t, "erin") != 6 || b.balance(t, "house") != 3 {
		t.Fatal("balances after resale")
	}
	if rep := b.verify(t); rep.Rejected != 8 || rep.Purchases != 2 || rep.Listings != 1 {
		t.Fatalf("report %+v", rep)
	}
}

func TestConflictMovesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.grant(t, "fay", 50)
	a := b.newAsset(t, "a", "5")
	ctx := context.Background()
	if _, err := b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: "k", AssetID: a, BuyerID: "fay", Credits: 5}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []ledger.PurchaseRequest{
		{PurchaseID: "k", AssetID: a, BuyerID: "fay", Credits: 6},
		{PurchaseID: "k", AssetID: a, BuyerID: "gus", Credits: 5},
	} {
		if _, err := b.led.Apply(ctx, p); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("%+v: %v", p, err)
		}
		if _, _, err := b.led.Accept(ctx, p); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("accept %+v: %v", p, err)
		}
	}
	if b.balance(t, "fay") != 45 {
		t.Fatal("conflict moved credits")
	}
	b.verify(t)
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.newAsset(t, "a", "")
	ctx := context.Background()
	tests := []struct {
		req  ledger.PurchaseRequest
		want string
	}{
		{ledger.PurchaseRequest{PurchaseID: "p", AssetID: a, BuyerID: "x", Credits: -5}, "from 0 (free) to"},
		{ledger.PurchaseRequest{PurchaseID: "p", AssetID: a, BuyerID: "x", Credits: -1}, "from 0 (free) to"},
		{ledger.PurchaseRequest{PurchaseID: "p", AssetID: a, BuyerID: "x", Credits: ledger.CreditsMax + 1}, "from 0 (free) to"},
		{ledger.PurchaseRequest{PurchaseID: "", AssetID: a, BuyerID: "x", Credits: 1}, "purchase id"},
		{ledger.PurchaseRequest{PurchaseID: "p q", AssetID: a, BuyerID: "x", Credits: 1}, "purchase id"},
		{ledger.PurchaseRequest{PurchaseID: "p", AssetID: "../x", BuyerID: "x", Credits: 1}, "asset_id"},
		{ledger.PurchaseRequest{PurchaseID: "p", AssetID: a, BuyerID: "", Credits: 1}, "buyer_id"},
		{ledger.PurchaseRequest{PurchaseID: "p", AssetID: a, BuyerID: strings.Repeat("b", 129), Credits: 1}, "buyer_id"},
		{ledger.PurchaseRequest{PurchaseID: "p", AssetID: a, BuyerID: ledger.Issuance, Credits: 1}, "issuance"},
	}
	for _, tt := range tests {
		if _, err := b.led.Apply(ctx, tt.req); !errors.Is(err, ledger.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.req, err, tt.want)
		}
	}
	for _, g := range []struct {
		key, account string
		n            int64
	}{{"k", "a", 0}, {"k", "a", -1}, {"k", "a", ledger.CreditsMax + 1}, {"k", "", 1}, {"", "a", 1}, {"k", ledger.Issuance, 1}} {
		if _, err := b.led.Grant(ctx, g.key, g.account, g.n); !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("grant %+v: %v", g, err)
		}
	}
	if rep := b.verify(t); rep.Entries != 0 {
		t.Fatalf("bad input moved something: %+v", rep)
	}
}

func TestVerifyFindsTampering(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.grant(t, "hal", 10)
	b.rdb.HIncrBy(context.Background(), b.led.Keys().Balances(), "hal", 5)
	r, err := b.led.Verify(context.Background())
	if err != nil || r.OK() || !strings.Contains(strings.Join(r.Problems, "\n"), "hal: balance 15, its entries sum to 10") {
		t.Fatalf("report %+v, %v", r, err)
	}
}

func FuzzPurchaseRequest(f *testing.F) {
	f.Add("p-1", "0123456789abcdef0123", "alice", int64(10))
	f.Add("", "x", "", int64(-1))
	f.Fuzz(func(t *testing.T, id, asset, buyer string, n int64) {
		p := ledger.PurchaseRequest{PurchaseID: id, AssetID: asset, BuyerID: buyer, Credits: n}
		if err := p.Check(); err == nil && (n < 0 || n > ledger.CreditsMax || buyer == ledger.Issuance || strings.ContainsAny(id+buyer, " |\n")) {
			t.Fatalf("accepted %+v", p)
		}
	})
}

// TestLargeAmountsAreExact: Lua's cjson writes numbers with "%.14g", so a
// grant of 123456789012345 was kept in the history as 1.2345678901234e+14 (a
// digit lost) and every later read of the account, issuance included,
// failed. Amounts up to CreditsMax are exact everywhere they appear: grant
// results, balances, history entries, rejection details and verify.
func TestLargeAmountsAreExact(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	amounts := []int64{1, 99_999_999_999_999, 100_000_000_000_000, 123_456_789_012_345, ledger.CreditsMax - 1, ledger.CreditsMax}
	var issued int64
	for i, n := range amounts {
		account := fmt.Sprintf("big-%d", i)
		g, err := b.led.Grant(ctx, "k-"+account, account, n)
		if err != nil || g.Credits != n || g.Balance != n {
			t.Fatalf("grant %d: %+v, %v", n, g, err)
		}
		issued += n
		a, err := b.led.Account(ctx, account, 10)
		if err != nil || a.Balance != n || len(a.Entries) != 1 || a.Entries[0].Amount != n {
			t.Fatalf("account after a grant of %d: %+v, %v", n, a, err)
		}
	}
	iss, err := b.led.Account(ctx, ledger.Issuance, 100)
	if err != nil || iss.Balance != -issued || len(iss.Entries) != len(amounts) {
		t.Fatalf("issuance: %+v, %v", iss, err)
	}
	for i, e := range iss.Entries { // newest first
		if want := amounts[len(amounts)-1-i]; e.Amount != want {
			t.Errorf("issuance entry %d: amount %d, want %d", i, e.Amount, want)
		}
	}

	const price = 123_456_789_012_345
	dear := b.newAsset(t, "dear", fmt.Sprint(price))
	poor, err := b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: "poor", AssetID: dear, BuyerID: "big-2", Credits: price})
	if err != nil || poor.Reason != ledger.ReasonInsufficientCredits || poor.Detail != "big-2 has 100000000000000 credits, the purchase needs 123456789012345" {
		t.Fatalf("rejection: %+v, %v", poor, err)
	}
	rich, err := b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: "rich", AssetID: dear, BuyerID: "big-3", Credits: price})
	if err != nil || rich.Status != ledger.StatusSucceeded || rich.Seller != "house" {
		t.Fatalf("purchase: %+v, %v", rich, err)
	}
	for account, want := range map[string]int64{"big-3": 0, "house": price} {
		a, err := b.led.Account(ctx, account, 10)
		if err != nil || a.Balance != want || a.Entries[0].Kind != "purchase" || a.Entries[0].Amount != price {
			t.Fatalf("%s after the purchase: %+v, %v", account, a, err)
		}
	}
	if rep := b.verify(t); rep.Issued != issued || rep.Purchases != 1 {
		t.Fatalf("report %+v", rep)
	}
}

// TestIssuanceLimitHoldsUnderConcurrency: the issuance total was bounded
// only by int64, and passing it answered like an outage. The grant script
// refuses any grant that would take the credits ever issued past
// IssuanceMax, atomically, and says so; nothing moves when it refuses.
func TestIssuanceLimitHoldsUnderConcurrency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.grant(t, "seed", 1)
	// 12 grants of CreditsMax race; with one credit already issued only 7
	// fit under IssuanceMax (8 x CreditsMax).
	const racing = 12
	fits := int((ledger.IssuanceMax - 1) / ledger.CreditsMax)
	errs := make([]error, racing)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = b.led.Grant(ctx, fmt.Sprintf("race-%d", i), fmt.Sprintf("acct-%d", i%3), ledger.CreditsMax)
		}()
	}
	wg.Wait()
	granted := 0
	for _, err := range errs {
		switch {
		case err == nil:
			granted++
		case !errors.Is(err, ledger.ErrIssuanceLimit):
			t.Fatalf("refused with %v, want ErrIssuanceLimit", err)
		}
	}
	if granted != fits {
		t.Fatalf("%d grants of %d went through, want %d", granted, int64(ledger.CreditsMax), fits)
	}
	left := ledger.IssuanceMax - 1 - int64(fits)*ledger.CreditsMax
	// One credit more than is left: refused, with the cause and the fix.
	_, err := b.led.Grant(ctx, "over", "late", left+1)
	if !errors.Is(err, ledger.ErrIssuanceLimit) || !strings.Contains(err.Error(), fmt.Sprint(int64(ledger.IssuanceMax))) ||
		!strings.Contains(err.Error(), fmt.Sprintf("at most %d", left)) {
		t.Fatalf("grant of %d with %d left: %v", left+1, left, err)
	}
	if _, err := b.led.Grant(ctx, "exact", "late", left); err != nil {
		t.Fatalf("grant of exactly what is left (%d): %v", left, err)
	}
	if _, err := b.led.Grant(ctx, "one-more", "later", 1); !errors.Is(err, ledger.ErrIssuanceLimit) {
		t.Fatalf("grant of 1 at the limit: %v", err)
	}
	// A grant made before the limit still answers with its result.
	if g, err := b.led.Grant(ctx, "exact", "late", left); err != nil || g.Balance != left {
		t.Fatalf("repeat of a grant at the limit: %+v, %v", g, err)
	}
	if b.balance(t, ledger.Issuance) != -ledger.IssuanceMax || b.balance(t, "later") != 0 {
		t.Fatalf("issuance %d, later %d", b.balance(t, ledger.Issuance), b.balance(t, "later"))
	}
	if rep := b.verify(t); rep.Issued != ledger.IssuanceMax || rep.Entries != 1+fits+1 {
		t.Fatalf("report %+v", rep)
	}
}

// TestOldHistoryLinesReadExactly: history lines written before amounts were
// spliced in as integers carry cjson's rounded 1.2345678901234e+14; the
// account still reads, with the exact amount from the entries stream.
func TestOldHistoryLinesReadExactly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const n = 123_456_789_012_345
	g, err := b.led.Grant(ctx, "old", "olga", n)
	if err != nil {
		t.Fatal(err)
	}
	old := `{"id":"` + g.EntryID + `","kind":"grant","debit":"issuance","credit":"olga","amount":1.2345678901234e+14,"grant_key":"old","at":"2026-01-02T03:04:05Z"}`
	for _, account := range []string{"olga", ledger.Issuance} {
		if err := b.rdb.LSet(ctx, b.led.Keys().History(account), 0, old).Err(); err != nil {
			t.Fatal(err)
		}
		a, err := b.led.Account(ctx, account, 10)
		if err != nil || len(a.Entries) != 1 || a.Entries[0].Amount != n || a.Entries[0].ID != g.EntryID {
			t.Fatalf("%s with an old history line: %+v, %v", account, a, err)
		}
	}
	// A line that names no entry cannot be repaired: it is reported.
	gone := strings.Replace(old, g.EntryID, "1-1", 1)
	b.rdb.LSet(ctx, b.led.Keys().History("olga"), 0, gone)
	if _, err := b.led.Account(ctx, "olga", 10); err == nil || !strings.Contains(err.Error(), "history of olga is damaged") {
		t.Fatalf("damaged line: %v", err)
	}
}
