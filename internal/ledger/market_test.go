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
	"github.com/dab-assets/dab/internal/ledger"
)

// owned records an asset priced at credits that owner then buys from the
// house (a real sale in the ledger), with credits granted for it.
func (b *bundle) owned(t *testing.T, key, owner string, credits int64) string {
	t.Helper()
	ctx := context.Background()
	id := b.newAsset(t, key, fmt.Sprint(credits))
	if credits > 0 {
		if _, err := b.led.Grant(ctx, "for-"+key, owner, credits); err != nil {
			t.Fatal(err)
		}
	}
	r, err := b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: "setup-" + key, AssetID: id, BuyerID: owner, Credits: credits})
	if err != nil || r.Status != ledger.StatusSucceeded {
		t.Fatalf("%s buys %s: %+v, %v", owner, key, r, err)
	}
	return id
}

func (b *bundle) record(t *testing.T, id string) asset.Record {
	t.Helper()
	r, err := b.assets.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func credits(p *int64) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

// TestMarketRules: the house sells an unowned asset at its price, an owner
// sells only what it lists, at the listing; unpriced and unlisted are
// not_for_sale; 0 is free and still a sale; a sale ends the listing. Every
// rejection is stored and moves nothing.
func TestMarketRules(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	listed := b.owned(t, "listed", "alice", 10)
	if _, err := b.led.SetListing(ctx, listed, "alice", 7, "alice"); err != nil {
		t.Fatal(err)
	}
	unlisted := b.owned(t, "unlisted", "alice", 10)
	listedFree := b.owned(t, "listed-free", "alice", 10)
	if _, err := b.led.SetListing(ctx, listedFree, ledger.AnyOwner, 0, "admin token"); err != nil {
		t.Fatal(err)
	}
	priced := b.newAsset(t, "priced", "5")
	unpriced := b.newAsset(t, "unpriced", "")
	free := b.newAsset(t, "free", "0")
	b.grant(t, "bob", 100)
	b.grant(t, "poor", 2)

	type want struct {
		status, reason, seller string
	}
	ok := func(seller string) want { return want{ledger.StatusSucceeded, "", seller} }
	no := func(reason string) want { return want{ledger.StatusRejected, reason, ""} }
	tests := []struct {
		name, asset, buyer string
		credits            int64
		want               want
	}{
		{"listed, wrong amount", listed, "bob", 10, no(ledger.ReasonWrongPrice)},
		{"listed, by its owner", listed, "alice", 7, no(ledger.ReasonAlreadyOwner)},
		{"listed, too poor", listed, "poor", 7, no(ledger.ReasonInsufficientCredits)},
		{"unlisted, any amount", unlisted, "bob", 10, no(ledger.ReasonNotForSale)},
		{"unlisted, free", unlisted, "bob", 0, no(ledger.ReasonNotForSale)},
		{"unlisted, by its owner", unlisted, "alice", 10, no(ledger.ReasonAlreadyOwner)},
		{"unowned priced, wrong amount", priced, "bob", 4, no(ledger.ReasonWrongPrice)},
		{"unowned priced, free", priced, "bob", 0, no(ledger.ReasonWrongPrice)},
		{"unowned unpriced", unpriced, "bob", 5, no(ledger.ReasonNotForSale)},
		{"unowned unpriced, free", unpriced, "bob", 0, no(ledger.ReasonNotForSale)},
		{"price 0, paying 1", free, "bob", 1, no(ledger.ReasonWrongPrice)},
		{"listing 0, paying 1", listedFree, "bob", 1, no(ledger.ReasonWrongPrice)},
		{"unknown asset", "0123456789abcdef0123", "bob", 1, no(ledger.ReasonUnknownAsset)},
		// The sales.
		{"listed", listed, "bob", 7, ok("alice")},
		{"listed, sold already", listed, "poor", 7, no(ledger.ReasonNotForSale)},
		{"unowned priced", priced, "bob", 5, ok("house")},
		{"price 0", free, "poor", 0, ok("house")},
		{"listing 0", listedFree, "poor", 0, ok("alice")},
	}
	for i, tt := range tests {
		before, _ := b.led.Verify(ctx)
		p := ledger.PurchaseRequest{PurchaseID: fmt.Sprintf("m-%d", i), AssetID: tt.asset, BuyerID: tt.buyer, Credits: tt.credits}
		r, err := b.led.Apply(ctx, p)
		if err != nil || r.Status != tt.want.status || r.Reason != tt.want.reason || r.Seller != tt.want.seller {
			t.Errorf("%s: %+v, %v; want %+v", tt.name, r, err, tt.want)
			continue
		}
		if again, err := b.led.Apply(ctx, p); err != nil || again != r {
			t.Errorf("%s repeated: %+v, %v", tt.name, again, err)
		}
		after, _ := b.led.Verify(ctx)
		if r.Status == ledger.StatusRejected && (r.Detail == "" || after.Entries != before.Entries) {
			t.Errorf("%s: a rejection without a detail, or one that wrote entries: %+v", tt.name, r)
		}
	}
	// Who owns what, and at what price, now.
	for _, c := range []struct {
		id, owner, listing string
	}{{listed, "bob", "none"}, {unlisted, "alice", "none"}, {listedFree, "poor", "none"}, {priced, "bob", "none"}, {free, "poor", "none"}, {unpriced, "", "none"}} {
		if r := b.record(t, c.id); r.Owner != c.owner || credits(r.Listing) != c.listing {
			t.Errorf("%s: owner %q listing %s, want %q %s", r.Name, r.Owner, credits(r.Listing), c.owner, c.listing)
		}
	}
	if b.balance(t, "bob") != 100-7-5 || b.balance(t, "poor") != 2 || b.balance(t, "alice") != 7 {
		t.Errorf("balances: bob %d poor %d alice %d", b.balance(t, "bob"), b.balance(t, "poor"), b.balance(t, "alice"))
	}
	// A free sale is an entry of 0 credits in both histories.
	a, err := b.led.Account(ctx, "poor", 10)
	if err != nil || len(a.Entries) != 3 || a.Entries[0].Kind != ledger.KindPurchase || a.Entries[0].Amount != 0 || a.Entries[0].Credit != "alice" {
		t.Fatalf("poor's account: %+v, %v", a, err)
	}
	rep := b.verify(t)
	if rep.Purchases != 3+4 || rep.Listings != 2 {
		t.Fatalf("report %+v", rep)
	}
}

// TestListingAndPriceRules: only the owner (or admin) lists, only owned
// assets are listed, only unowned assets are priced; each change is one
// entry, a change to the same value none.
func TestListingAndPriceRules(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	mine := b.owned(t, "mine", "alice", 3)
	unowned := b.newAsset(t, "unowned", "")
	const unknown = "0123456789abcdef0123"
	type refusal struct {
		name      string
		err, want error
	}
	var errs []refusal
	add := func(name string, want error) func(ledger.Offer, error) {
		return func(_ ledger.Offer, err error) { errs = append(errs, refusal{name, err, want}) }
	}
	add("list by another account", ledger.ErrNotOwner)(b.led.SetListing(ctx, mine, "bob", 5, "bob"))
	add("unlist by another account", ledger.ErrNotOwner)(b.led.ClearListing(ctx, mine, "bob", "bob"))
	add("list an unowned asset", ledger.ErrNotOwned)(b.led.SetListing(ctx, unowned, ledger.AnyOwner, 5, "admin"))
	add("unlist an unowned asset", ledger.ErrNotOwned)(b.led.ClearListing(ctx, unowned, ledger.AnyOwner, "admin"))
	add("list an unknown asset", ledger.ErrNotFound)(b.led.SetListing(ctx, unknown, "alice", 5, "alice"))
	add("list a bad asset ID", ledger.ErrNotFound)(b.led.SetListing(ctx, "../x", "alice", 5, "alice"))
	add("list below 0", ledger.ErrInvalid)(b.led.SetListing(ctx, mine, "alice", -1, "alice"))
	add("list above the maximum", ledger.ErrInvalid)(b.led.SetListing(ctx, mine, "alice", ledger.CreditsMax+1, "alice"))
	add("list for a bad account", ledger.ErrInvalid)(b.led.SetListing(ctx, mine, "", 5, "x"))
	add("price an owned asset", ledger.ErrOwned)(b.led.SetPrice(ctx, mine, 5, "admin"))
	add("price an unknown asset", ledger.ErrNotFound)(b.led.SetPrice(ctx, unknown, 5, "admin"))
	add("price below 0", ledger.ErrInvalid)(b.led.SetPrice(ctx, unowned, -1, "admin"))
	for _, e := range errs {
		if !errors.Is(e.err, e.want) {
			t.Errorf("%s: %v, want %v", e.name, e.err, e.want)
		}
	}
	if r := b.record(t, mine); r.Listing != nil {
		t.Fatalf("refused changes listed it: %+v", r)
	}
	if rep := b.verify(t); rep.Listings != 0 || rep.Prices != 0 {
		t.Fatalf("refused changes wrote entries: %+v", rep)
	}

	o, err := b.led.SetListing(ctx, mine, "alice", 5, "alice")
	if err != nil || o.EntryID == "" || o.Seller != "alice" {
		t.Fatalf("list: %+v, %v", o, err)
	}
	if o, err := b.led.SetListing(ctx, mine, "alice", 5, "alice"); err != nil || o.EntryID != "" {
		t.Fatalf("the same listing again: %+v, %v", o, err)
	}
	if _, err := b.led.SetListing(ctx, mine, ledger.AnyOwner, ledger.CreditsMax, "admin"); err != nil {
		t.Fatalf("admin relists: %v", err)
	}
	if r := b.record(t, mine); credits(r.Listing) != fmt.Sprint(int64(ledger.CreditsMax)) {
		t.Fatalf("listing %s", credits(r.Listing))
	}
	if _, err := b.led.ClearListing(ctx, mine, "alice", "alice"); err != nil {
		t.Fatal(err)
	}
	if o, err := b.led.ClearListing(ctx, mine, "alice", "alice"); err != nil || o.EntryID != "" {
		t.Fatalf("unlist twice: %+v, %v", o, err)
	}
	if r := b.record(t, mine); r.Listing != nil {
		t.Fatalf("unlisted: %+v", r.Listing)
	}
	// Prices: set, free, cleared; clearing is allowed on an owned asset.
	for _, n := range []int64{9, 0} {
		if o, err := b.led.SetPrice(ctx, unowned, n, "admin"); err != nil || o.Seller != "house" || o.EntryID == "" {
			t.Fatalf("price %d: %+v, %v", n, o, err)
		}
		if r := b.record(t, unowned); r.Price == nil || *r.Price != n {
			t.Fatalf("price %d: %s", n, credits(r.Price))
		}
	}
	if _, err := b.led.ClearPrice(ctx, unowned, "admin"); err != nil {
		t.Fatal(err)
	}
	if r := b.record(t, unowned); r.Price != nil {
		t.Fatalf("cleared price: %s", credits(r.Price))
	}
	if _, err := b.led.ClearPrice(ctx, mine, "admin"); err != nil {
		t.Fatalf("clear the price of an owned asset: %v", err)
	}
	rep := b.verify(t)
	if rep.Listings != 3 || rep.Prices != 4 {
		t.Fatalf("report %+v", rep)
	}
	// The entries say who changed what.
	msgs, _ := b.rdb.XRange(ctx, b.led.Keys().Entries(), "-", "+").Result()
	var kinds []string
	for _, m := range msgs {
		if k := m.Values["kind"]; k == ledger.KindListing || k == ledger.KindPrice {
			kinds = append(kinds, fmt.Sprintf("%s %s %s by %s", k, m.Values["action"], m.Values["amount"], m.Values["by"]))
		}
	}
	want := "listing set 5 by alice|listing set 1000000000000000 by admin|listing clear  by alice|price set 9 by admin|price set 0 by admin|price clear  by admin|price clear  by admin"
	if got := strings.Join(kinds, "|"); got != want {
		t.Fatalf("entries:\n%s\nwant\n%s", got, want)
	}
}

// TestConcurrentBuyersOfOneListing: several buyers race for one listed
// asset: exactly one wins, the others are told it is not for sale (any
// more), the listing ends and the ledger verifies.
func TestConcurrentBuyersOfOneListing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for round := range 5 {
		id := b.owned(t, fmt.Sprintf("race-%d", round), "alice", 1)
		if _, err := b.led.SetListing(ctx, id, "alice", 6, "alice"); err != nil {
			t.Fatal(err)
		}
		const buyers = 12
		results := make([]ledger.PurchaseResult, buyers)
		var wg sync.WaitGroup
		for i := range results {
			buyer := fmt.Sprintf("buyer-%d-%d", round, i)
			b.grant(t, buyer, 10)
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: "race-" + buyer, AssetID: id, BuyerID: buyer, Credits: 6})
				if err != nil {
					t.Error(err)
				}
				results[i] = r
			}()
		}
		wg.Wait()
		winner := ""
		for _, r := range results {
			switch {
			case r.Status == ledger.StatusSucceeded && winner == "":
				winner = r.BuyerID
				if r.Seller != "alice" {
					t.Fatalf("sold by %q", r.Seller)
				}
			case r.Status == ledger.StatusRejected && r.Reason == ledger.ReasonNotForSale:
			default:
				t.Fatalf("round %d: %+v (winner so far %q)", round, r, winner)
			}
		}
		rec := b.record(t, id)
		if winner == "" || rec.Owner != winner || rec.Listing != nil || b.balance(t, winner) != 4 {
			t.Fatalf("round %d: winner %q, record %+v", round, winner, rec)
		}
		sales, err := b.led.Sales(ctx, id)
		if err != nil || len(sales) != 2 || sales[1].Buyer != winner || sales[1].Seller != "alice" || sales[1].Credits != 6 {
			t.Fatalf("sales: %+v, %v", sales, err)
		}
	}
	if b.balance(t, "alice") != 5*6 {
		t.Fatalf("alice has %d", b.balance(t, "alice"))
	}
	b.verify(t)
}

// TestRelistRacesSale: the owner changes the listing while a buyer buys at
// the old one. Either the sale comes first (the relist is refused: the
// seller no longer owns it) or the relist does (the purchase names the
// wrong price); never does the new owner end up with the old owner's
// listing.
func TestRelistRacesSale(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.grant(t, "bob", 1000)
	for round := range 30 {
		id := b.owned(t, fmt.Sprintf("relist-%d", round), "alice", 1)
		if _, err := b.led.SetListing(ctx, id, "alice", 5, "alice"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var buy ledger.PurchaseResult
		var relist error
		wg.Add(2)
		go func() {
			defer wg.Done()
			buy, _ = b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: fmt.Sprintf("relist-%d", round), AssetID: id, BuyerID: "bob", Credits: 5})
		}()
		go func() { defer wg.Done(); _, relist = b.led.SetListing(ctx, id, "alice", 8, "alice") }()
		wg.Wait()
		rec := b.record(t, id)
		switch {
		case buy.Status == ledger.StatusSucceeded && errors.Is(relist, ledger.ErrNotOwner):
			if rec.Owner != "bob" || rec.Listing != nil {
				t.Fatalf("round %d: sale first, record %+v", round, rec)
			}
		case buy.Reason == ledger.ReasonWrongPrice && relist == nil:
			if rec.Owner != "alice" || credits(rec.Listing) != "8" {
				t.Fatalf("round %d: relist first, record %+v", round, rec)
			}
		default:
			t.Fatalf("round %d: purchase %+v, relist %v", round, buy, relist)
		}
	}
	b.verify(t)
}

// TestSalesHistory: every sale of an asset, oldest first, with its time,
// seller, buyer, credits, purchase ID and entry ID; repeats add nothing.
func TestSalesHistory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := b.newAsset(t, "story", "4")
	for _, a := range []string{"amy", "ben", "cat"} {
		b.grant(t, a, 50)
	}
	steps := []struct {
		seller, buyer string
		credits       int64
	}{{"house", "amy", 4}, {"amy", "ben", 9}, {"ben", "cat", 0}}
	var entries []string
	for i, s := range steps {
		if s.seller != "house" {
			if _, err := b.led.SetListing(ctx, id, s.seller, s.credits, s.seller); err != nil {
				t.Fatal(err)
			}
		}
		p := ledger.PurchaseRequest{PurchaseID: fmt.Sprintf("sale-%d", i), AssetID: id, BuyerID: s.buyer, Credits: s.credits}
		for range 2 { // a retried purchase is one sale
			r, err := b.led.Apply(ctx, p)
			if err != nil || r.Status != ledger.StatusSucceeded || r.Seller != s.seller {
				t.Fatalf("sale %d: %+v, %v", i, r, err)
			}
			if len(entries) == i {
				entries = append(entries, r.EntryID)
			}
		}
		// A rejected purchase is no sale.
		if r, _ := b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: fmt.Sprintf("nope-%d", i), AssetID: id, BuyerID: "zed", Credits: 1}); r.Status != ledger.StatusRejected {
			t.Fatalf("not a sale: %+v", r)
		}
	}
	sales, err := b.led.Sales(ctx, id)
	if err != nil || len(sales) != len(steps) {
		t.Fatalf("sales: %+v, %v", sales, err)
	}
	for i, s := range sales {
		want := steps[i]
		if s.Seller != want.seller || s.Buyer != want.buyer || s.Credits != want.credits || s.PurchaseID != fmt.Sprintf("sale-%d", i) ||
			s.EntryID != entries[i] || s.At.IsZero() || i > 0 && s.At.Before(sales[i-1].At) {
			t.Errorf("sale %d: %+v, want %+v", i, s, want)
		}
	}
	if none, err := b.led.Sales(ctx, b.newAsset(t, "never-sold", "1")); err != nil || len(none) != 0 {
		t.Fatalf("an asset never sold: %+v, %v", none, err)
	}
	if _, err := b.led.Sales(ctx, "../x"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("bad ID: %v", err)
	}
	b.verify(t)
}

// TestVerifyChecksListingsAndSales: a listing that no entry explains, a
// listed asset nobody owns and a sales list that lost a sale are reported;
// RebuildSales restores lost lists from the entries (a ledger from before
// the lists existed).
func TestVerifyChecksListingsAndSales(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := b.owned(t, "x", "alice", 2)
	other := b.owned(t, "y", "bob", 3)
	b.verify(t)
	rec := b.assets.Keys().Record(id)
	b.rdb.HSet(ctx, rec, "listing", "3")
	b.rdb.Del(ctx, b.led.Keys().Sales(other))
	r, err := b.led.Verify(ctx)
	all := strings.Join(r.Problems, "\n")
	if err != nil || !strings.Contains(all, "asset "+id+` is listed at "3", its entries leave it listed at ""`) ||
		!strings.Contains(all, "asset "+other+": its sales list (0 lines) does not match its 1 purchase entries") {
		t.Fatalf("report %+v, %v", r, err)
	}
	b.rdb.HSet(ctx, rec, "owner", "")
	if r, _ := b.led.Verify(ctx); !strings.Contains(strings.Join(r.Problems, "\n"), "asset "+id+" is listed but nobody owns it") {
		t.Fatalf("report %+v", r)
	}
	b.rdb.HSet(ctx, rec, "owner", "alice")
	b.rdb.HDel(ctx, rec, "listing")
	rebuilt, err := b.led.RebuildSales(ctx)
	if err != nil || len(rebuilt) != 1 || rebuilt[0] != other {
		t.Fatalf("rebuild: %v, %v", rebuilt, err)
	}
	if s, err := b.led.Sales(ctx, other); err != nil || len(s) != 1 || s[0].Buyer != "bob" || s[0].Credits != 3 || s[0].Seller != "house" {
		t.Fatalf("rebuilt sales: %+v, %v", s, err)
	}
	if again, err := b.led.RebuildSales(ctx); err != nil || len(again) != 0 {
		t.Fatalf("second rebuild: %v, %v", again, err)
	}
	b.verify(t)
	// Entries of an unknown kind or a bad form are reported too.
	b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: b.led.Keys().Entries(), Values: []any{"kind", "listing", "action", "set", "asset_id", id, "amount", "05"}})
	b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: b.led.Keys().Entries(), Values: []any{"kind", "gift", "amount", "5"}})
	b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: b.led.Keys().Entries(), Values: []any{"kind", "grant", "debit", ledger.Issuance, "credit", "z", "amount", "0"}})
	r, _ = b.led.Verify(ctx)
	all = strings.Join(r.Problems, "\n")
	for _, want := range []string{`has a bad action "set" or amount "05"`, `unknown kind "gift"`, `has a bad amount "0"`} {
		if !strings.Contains(all, want) {
			t.Errorf("report lacks %q: %v", want, r.Problems)
		}
	}
}
