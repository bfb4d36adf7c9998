package ledger

import (
	"context"
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
