package ledger

import (
	"context"
	"fmt"
	"testing"

	"github.com/dab-assets/dab/internal/harness"
)

// TestScriptsRefuseNonCanonicalAmounts: the scripts put the amount into the
// history line as a JSON number without re-encoding it, so they take only
// what strconv.FormatInt writes for 1 to 16 digits (and "0" for a free
// purchase, never for a grant); anything else (a float, an exponent, a
// sign, JSON) is refused before anything is written.
func TestScriptsRefuseNonCanonicalAmounts(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	s := New(rdb, "dab:", "house")
	ctx := context.Background()
	const assetID = "0123456789abcdef0123"
	if err := rdb.HSet(ctx, s.assets.Record(assetID), "owner", "", "uploader", "").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, s.keys.Balances(), "a", "100").Err(); err != nil {
		t.Fatal(err)
	}
	before, _ := rdb.Keys(ctx, "*").Result()
	for _, amount := range []string{"1e+14", "1.2345678901234e+14", "1.5", "-5", "0", "05", "00", "-0", " 5", "5 ", "+5",
		`5,"kind":"x"`, "", "12345678901234567", "0x10"} {
		gkeys := []string{s.keys.Grant("k"), s.keys.Balances(), s.keys.Entries(), s.keys.History("a"), s.keys.History(Issuance), s.events.Stream()}
		res, err := s.grant.Run(ctx, rdb, gkeys, "a", amount, Issuance, now(), "k", IssuanceMax, 1000, "0").StringSlice()
		if err != nil || res[0] != "invalid" {
			t.Errorf("grant of %q: %v, %v; want invalid", amount, res, err)
		}
		if amount == "0" {
			continue // a free purchase
		}
		pkeys := []string{s.keys.Purchase("p"), s.assets.Record(assetID), s.keys.Balances(), s.keys.Entries(),
			s.keys.History("a"), s.keys.History("house"), s.keys.Purchases(), s.keys.Sales(assetID), s.events.Stream()}
		res, err = s.purchase.Run(ctx, rdb, pkeys, "p", assetID, "a", amount, "house", "house", now(), 1000, "0").StringSlice()
		if err != nil || res[0] != "invalid" {
			t.Errorf("purchase for %q: %v, %v; want invalid", amount, res, err)
		}
		for _, field := range []string{KindPrice, KindListing} {
			res, err = s.offer.Run(ctx, rdb, []string{s.assets.Record(assetID), s.keys.Entries(), s.events.Stream()}, field, assetID, amount, AnyOwner, "t", now(), int64(CreditsMax), "house", 1000, "0").StringSlice()
			if err != nil || res[0] != "invalid" && amount != "" {
				t.Errorf("%s of %q: %v, %v; want invalid", field, amount, res, err)
			}
		}
	}
	// A price or listing above CreditsMax (16 digits, so the form passes).
	for _, field := range []string{KindPrice, KindListing} {
		res, err := s.offer.Run(ctx, rdb, []string{s.assets.Record(assetID), s.keys.Entries(), s.events.Stream()}, field, assetID, "1000000000000001", AnyOwner, "t", now(), int64(CreditsMax), "house", 1000, "0").StringSlice()
		if err != nil || res[0] != "invalid" {
			t.Errorf("%s over CreditsMax: %v, %v; want invalid", field, res, err)
		}
	}
	after, _ := rdb.Keys(ctx, "*").Result()
	if bal, _ := rdb.HGet(ctx, s.keys.Balances(), "a").Result(); len(after) != len(before) || bal != "100" {
		t.Fatalf("refused amounts wrote something: keys %v -> %v, balance %s", before, after, bal)
	}
}

// TestApplyPaysTheSellerItFinds: Apply guesses the house as the seller (no
// lookup before the script); when the asset has an owner or an uploader
// account, the script answers "stale" having written nothing, and the
// purchase is applied with the seller it named: that seller is paid and
// gets the history line, the house gets nothing.
func TestApplyPaysTheSellerItFinds(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	s := New(rdb, "dab:", "house")
	ctx := context.Background()
	tests := []struct {
		name, owner, listing, uploader, seller string
	}{
		{"unowned, no uploader", "", "", "", "house"},
		{"unowned, uploader account", "", "", "carol", "carol"},
		{"owned and listed", "alice", "5", "carol", "alice"},
	}
	if err := rdb.HSet(ctx, s.keys.Balances(), "bob", "100").Err(); err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		assetID := fmt.Sprintf("0123456789abcdef012%d", i)
		if err := rdb.HSet(ctx, s.assets.Record(assetID), "owner", tt.owner, "uploader", tt.uploader, "price", "5", "listing", tt.listing).Err(); err != nil {
			t.Fatal(err)
		}
		// A wrong guess, by hand: nothing is written.
		pid := fmt.Sprintf("p%d", i)
		before, _ := rdb.Keys(ctx, "*").Result()
		pkeys := []string{s.keys.Purchase(pid), s.assets.Record(assetID), s.keys.Balances(), s.keys.Entries(),
			s.keys.History("bob"), s.keys.History("nobody"), s.keys.Purchases(), s.keys.Sales(assetID), s.events.Stream()}
		res, err := s.purchase.Run(ctx, rdb, pkeys, pid, assetID, "bob", "5", "nobody", "house", now(), 1000, "0").StringSlice()
		after, _ := rdb.Keys(ctx, "*").Result()
		if err != nil || res[0] != "stale" || res[1] != tt.seller || len(after) != len(before) {
			t.Fatalf("%s: a wrong guess: %v, %v, keys %d -> %d; want stale %s, nothing written", tt.name, res, err, len(before), len(after), tt.seller)
		}
		paid, _ := rdb.HGet(ctx, s.keys.Balances(), tt.seller).Int64()
		r, err := s.Apply(ctx, PurchaseRequest{PurchaseID: pid, AssetID: assetID, BuyerID: "bob", Credits: 5})
		if err != nil || r.Status != StatusSucceeded || r.Seller != tt.seller {
			t.Fatalf("%s: %+v, %v; want succeeded, sold by %s", tt.name, r, err, tt.seller)
		}
		if now, _ := rdb.HGet(ctx, s.keys.Balances(), tt.seller).Int64(); now != paid+5 {
			t.Errorf("%s: %s has %d credits, want %d", tt.name, tt.seller, now, paid+5)
		}
		if n, _ := rdb.LLen(ctx, s.keys.History(tt.seller)).Result(); n != 1 {
			t.Errorf("%s: %s's history has %d lines, want 1", tt.name, tt.seller, n)
		}
		rdb.Del(ctx, s.keys.History(tt.seller))
	}
	if n, _ := rdb.Exists(ctx, s.keys.History("nobody")).Result(); n != 0 {
		t.Fatal("the wrong guess got a history")
	}
}
