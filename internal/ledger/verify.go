package ledger

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
)

// Report is what Verify found.
type Report struct {
	Entries   int      `json:"entries"`
	Accounts  int      `json:"accounts"`
	Purchases int      `json:"purchases_succeeded"`
	Rejected  int      `json:"purchases_rejected"`
	Issued    int64    `json:"credits_issued"`
	Problems  []string `json:"problems"`
	// Listings and Prices count the listing and price changes (entries
	// that move no credits).
	Listings int `json:"listing_entries"`
	Prices   int `json:"price_entries"`
}

// OK reports whether no problem was found.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Verify replays every entry and checks: each balance equals the sum of its
// entries; no balance but issuance is negative; all balances sum to zero;
// no more than IssuanceMax credits were issued;
// each succeeded purchase has exactly one entry; each asset bought is owned
// by the buyer of its last purchase; each asset's listing is what its
// listing entries and sales leave (a sale ends it) and only owned assets
// are listed; each asset's sales list names its purchase entries in order.
// Price and listing entries move no credits; a purchase entry may be of 0
// credits (free), a grant may not. It reads without locking: run it while
// no purchases are being applied for an exact answer.
func (s *Store) Verify(ctx context.Context) (Report, error) {
	var r Report
	derived := map[string]int64{}
	entriesByPurchase := map[string]int{}
	lastBuyer := map[string]string{} // asset -> buyer of its last purchase entry
	listing := map[string]string{}   // asset -> its listing by the entries ("" none)
	sales := map[string][]Entry{}    // asset -> its purchase entries, oldest first
	start := "-"
	for {
		msgs, err := s.rdb.XRangeN(ctx, s.keys.Entries(), start, "+", 1000).Result()
		if err != nil {
			return r, fmt.Errorf("ledger: read entries: %w", err)
		}
		for _, m := range msgs {
			r.Entries++
			get := func(k string) string { v, _ := m.Values[k].(string); return v }
			kind := get("kind")
			switch kind {
			case KindGrant, KindPurchase:
			case KindListing, KindPrice:
				if p := checkOfferEntry(m.ID, get); p != "" {
					r.Problems = append(r.Problems, p)
					continue
				}
				if kind == KindPrice {
					r.Prices++
					continue
				}
				r.Listings++
				listing[get("asset_id")] = get("amount")
				continue
			default:
				r.Problems = append(r.Problems, fmt.Sprintf("entry %s has an unknown kind %q", m.ID, kind))
				continue
			}
			amount, err := strconv.ParseInt(get("amount"), 10, 64)
			if err != nil || amount < 0 || amount == 0 && kind == KindGrant {
				r.Problems = append(r.Problems, fmt.Sprintf("entry %s has a bad amount %q", m.ID, get("amount")))
				continue
			}
			derived[get("debit")] -= amount
			derived[get("credit")] += amount
			if kind == KindPurchase {
				a := get("asset_id")
				entriesByPurchase[get("purchase_id")]++
				lastBuyer[a] = get("debit")
				listing[a] = "" // a sale ends the listing
				sales[a] = append(sales[a], Entry{ID: m.ID})
			}
		}
		if len(msgs) < 1000 {
			break
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	stored, err := s.rdb.HGetAll(ctx, s.keys.Balances()).Result()
	if err != nil {
		return r, fmt.Errorf("ledger: read balances: %w", err)
	}
	accounts := map[string]bool{}
	for a := range derived {
		accounts[a] = true
	}
	for a := range stored {
		accounts[a] = true
	}
	names := make([]string, 0, len(accounts))
	for a := range accounts {
		names = append(names, a)
	}
	sort.Strings(names)
	var total int64
	for _, a := range names {
		bal, _ := strconv.ParseInt(stored[a], 10, 64)
		total += bal
		if bal != derived[a] {
			r.Problems = append(r.Problems, fmt.Sprintf("account %s: balance %d, its entries sum to %d", a, bal, derived[a]))
		}
		if bal < 0 && a != Issuance {
			r.Problems = append(r.Problems, fmt.Sprintf("account %s is negative: %d", a, bal))
		}
	}
	r.Accounts, r.Issued = len(names), -derived[Issuance]
	if r.Issued > IssuanceMax {
		r.Problems = append(r.Problems, fmt.Sprintf("%d credits were issued, more than the limit of %d: balances this large are not exact in the ledger's scripts", r.Issued, int64(IssuanceMax)))
	}
	if total != 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("balances sum to %d, not 0: credits were created or destroyed", total))
	}
	ids, err := s.rdb.SMembers(ctx, s.keys.Purchases()).Result()
	if err != nil {
		return r, fmt.Errorf("ledger: read purchases: %w", err)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p, err := s.getPurchase(ctx, id, true)
		if err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("purchase %s: %v", id, err))
			continue
		}
		switch p.Status {
		case StatusSucceeded:
			r.Purchases++
			if n := entriesByPurchase[id]; n != 1 {
				r.Problems = append(r.Problems, fmt.Sprintf("purchase %s succeeded with %d entries, want 1", id, n))
			}
		case StatusRejected:
			r.Rejected++
			if n := entriesByPurchase[id]; n != 0 {
				r.Problems = append(r.Problems, fmt.Sprintf("purchase %s was rejected but has %d entries", id, n))
			}
		}
	}
	for id, n := range entriesByPurchase {
		if p, err := s.getPurchase(ctx, id, true); err != nil || p.Status != StatusSucceeded {
			r.Problems = append(r.Problems, fmt.Sprintf("%d entries for purchase %s, which is not recorded as succeeded", n, id))
		}
	}
	for assetID, buyer := range lastBuyer {
		owner, err := s.rdb.HGet(ctx, s.assets.Record(assetID), "owner").Result()
		if err != nil && err != redis.Nil {
			return r, fmt.Errorf("ledger: %w", err)
		}
		if owner != buyer {
			r.Problems = append(r.Problems, fmt.Sprintf("asset %s is owned by %q, its last purchase was by %q", assetID, owner, buyer))
		}
	}
	for _, assetID := range sortedKeys(listing) {
		vals, err := s.rdb.HMGet(ctx, s.assets.Record(assetID), "owner", "listing").Result()
		if err != nil {
			return r, fmt.Errorf("ledger: %w", err)
		}
		owner, _ := vals[0].(string)
		listed, _ := vals[1].(string)
		if want := listing[assetID]; listed != want {
			r.Problems = append(r.Problems, fmt.Sprintf("asset %s is listed at %q, its entries leave it listed at %q", assetID, listed, want))
		}
		if listed != "" && owner == "" {
			r.Problems = append(r.Problems, fmt.Sprintf("asset %s is listed but nobody owns it", assetID))
		}
	}
	for _, assetID := range sortedKeys(sales) {
		lines, err := s.rdb.LRange(ctx, s.keys.Sales(assetID), 0, -1).Result()
		if err != nil {
			return r, fmt.Errorf("ledger: %w", err)
		}
		if p := salesMismatch(assetID, lines, sales[assetID]); p != "" {
			r.Problems = append(r.Problems, p)
		}
	}
	sort.Strings(r.Problems)
	return r, nil
}

// checkOfferEntry checks a price or listing entry's form: an asset, an
// action, and an amount from 0 to CreditsMax when set, none when cleared.
func checkOfferEntry(id string, get func(string) string) string {
	amount := get("amount")
	switch {
	case !asset.ValidID(get("asset_id")):
		return fmt.Sprintf("%s entry %s names no asset (%q)", get("kind"), id, get("asset_id"))
	case get("action") == "clear" && amount == "":
		return ""
	case get("action") == "set":
		n, err := strconv.ParseInt(amount, 10, 64)
		if err == nil && n >= 0 && n <= CreditsMax && strconv.FormatInt(n, 10) == amount {
			return ""
		}
	}
	return fmt.Sprintf("%s entry %s has a bad action %q or amount %q", get("kind"), id, get("action"), amount)
}

// Durability says whether the Redis behind the ledger keeps writes on disk
// (the append-only file). The ledger is only as durable as Redis.
func Durability(ctx context.Context, rdb redis.UniversalClient) (aof bool, fsync string, err error) {
	info, err := rdb.Info(ctx, "persistence").Result()
	if err != nil {
		return false, "", err
	}
	aof = containsLine(info, "aof_enabled:1")
	if v, err := rdb.ConfigGet(ctx, "appendfsync").Result(); err == nil {
		fsync = v["appendfsync"]
	}
	return aof, fsync, nil
}

func containsLine(s, line string) bool {
	for start := 0; start < len(s); {
		end := start
		for end < len(s) && s[end] != '\n' {
			end++
		}
		l := s[start:end]
		if len(l) > 0 && l[len(l)-1] == '\r' {
			l = l[:len(l)-1]
		}
		if l == line {
			return true
		}
		start = end + 1
	}
	return false
}
