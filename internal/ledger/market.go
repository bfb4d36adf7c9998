package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
)

// Offer is the outcome of a price or listing change.
type Offer struct {
	AssetID string `json:"asset_id"`
	// Seller is who sells the asset: its owner for a listing; its
	// uploader account or the house for a price.
	Seller string `json:"seller"`
	// EntryID is the entry that records the change; empty when the asset
	// was already offered so (nothing was written).
	EntryID string `json:"entry_id,omitempty"`
}

// SetPrice sets what the house sells an unowned asset for (0: free). An
// asset somebody owns has no price to set: ErrOwned (its owner lists it).
// by names who asks, for the entry.
func (s *Store) SetPrice(ctx context.Context, assetID string, credits int64, by string) (Offer, error) {
	if err := CheckPrice(credits); err != nil {
		return Offer{}, err
	}
	return s.changeOffer(ctx, KindPrice, assetID, strconv.FormatInt(credits, 10), AnyOwner, by)
}

// ClearPrice removes an asset's price: nobody can buy it from the house.
func (s *Store) ClearPrice(ctx context.Context, assetID, by string) (Offer, error) {
	return s.changeOffer(ctx, KindPrice, assetID, "", AnyOwner, by)
}

// SetListing puts an owned asset up for sale at credits (0: free) for
// owner, which must own it (ErrNotOwner otherwise), or AnyOwner (admin). An
// asset nobody owns cannot be listed: ErrNotOwned.
func (s *Store) SetListing(ctx context.Context, assetID, owner string, credits int64, by string) (Offer, error) {
	if err := CheckPrice(credits); err != nil {
		return Offer{}, err
	}
	return s.changeOffer(ctx, KindListing, assetID, strconv.FormatInt(credits, 10), owner, by)
}

// ClearListing takes an owned asset off sale, with the rules of SetListing.
func (s *Store) ClearListing(ctx context.Context, assetID, owner, by string) (Offer, error) {
	return s.changeOffer(ctx, KindListing, assetID, "", owner, by)
}

func (s *Store) changeOffer(ctx context.Context, kind, assetID, amount, owner, by string) (Offer, error) {
	if !asset.ValidID(assetID) {
		return Offer{}, fmt.Errorf("asset %q is not an asset ID (20 hex digits): %w", assetID, ErrNotFound)
	}
	if owner != AnyOwner {
		if err := CheckAccount(owner); err != nil {
			return Offer{}, err
		}
	}
	if by == "" {
		by = "unknown"
	}
	keys := []string{s.assets.Record(assetID), s.keys.Entries(), s.events.Stream()}
	maxLen, minID := s.eventArgs()
	var res []string
	err := s.write(ctx, kind+" of "+assetID, func(c redis.Scripter) error {
		var err error
		res, err = s.offer.Run(ctx, c, keys, kind, assetID, amount, owner, by, now(), int64(CreditsMax), s.house, maxLen, minID).StringSlice()
		if err != nil {
			return fmt.Errorf("ledger: %s of %s: %w", kind, assetID, err)
		}
		return nil
	})
	if err != nil {
		return Offer{}, err
	}
	switch res[0] {
	case "changed", "unchanged":
		return Offer{AssetID: assetID, EntryID: res[1], Seller: res[2]}, nil
	case "unknown_asset":
		return Offer{}, fmt.Errorf("asset %s: %w", assetID, ErrNotFound)
	case "not_owned":
		return Offer{}, fmt.Errorf("%w: %s", ErrNotOwned, res[1])
	case "not_owner":
		return Offer{}, fmt.Errorf("%w: %s is owned by another account: only its owner (or an admin) lists it", ErrNotOwner, assetID)
	case "owned":
		return Offer{}, fmt.Errorf("%w: %s is owned by %s: the house sells only assets nobody owns; an owner sells through a listing (PUT /v1/assets/%s/listing)", ErrOwned, assetID, res[1], assetID)
	default:
		return Offer{}, fmt.Errorf("%w: %s", ErrInvalid, res[1])
	}
}

// Sale is one sale of an asset, from its purchase entry.
type Sale struct {
	At         time.Time `json:"at"`
	Seller     string    `json:"seller"`
	Buyer      string    `json:"buyer"`
	Credits    int64     `json:"credits"`
	PurchaseID string    `json:"purchase_id"`
	EntryID    string    `json:"entry_id"`
}

// Sales lists every sale of an asset, oldest first, in O(sales): the
// purchase script appends each sale's entry to the asset's sales list. An
// asset never sold (or unknown) has none.
func (s *Store) Sales(ctx context.Context, assetID string) ([]Sale, error) {
	if !asset.ValidID(assetID) {
		return nil, fmt.Errorf("asset %q is not an asset ID (20 hex digits): %w", assetID, ErrNotFound)
	}
	lines, err := s.rdb.LRange(ctx, s.keys.Sales(assetID), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	out := make([]Sale, 0, len(lines))
	for _, l := range lines {
		e, err := s.historyEntry(ctx, l)
		if err != nil {
			return nil, fmt.Errorf("ledger: sales of %s are damaged: %w", assetID, err)
		}
		at, err := time.Parse(time.RFC3339Nano, e.At)
		if err != nil {
			return nil, fmt.Errorf("ledger: sales of %s are damaged: entry %s: time %q", assetID, e.ID, e.At)
		}
		out = append(out, Sale{At: at, Seller: e.Credit, Buyer: e.Debit, Credits: e.Amount, PurchaseID: e.PurchaseID, EntryID: e.ID})
	}
	return out, nil
}

// rebuildSalesLua replaces an asset's sales list with lines rebuilt from
// the entries stream, unless a sale was appended after the stream was read.
//
// KEYS[1] the asset's sales list
// ARGV[1] the newest entry ID the lines were read up to ("ms-seq")
// ARGV[2..] the lines, oldest first
//
// Returns "rebuilt", or "stale" (a newer sale is in the list: read again).
const rebuildSalesLua = `
local function newer(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not ams or not bms then return true end
  if tonumber(ams) ~= tonumber(bms) then return tonumber(ams) > tonumber(bms) end
  return tonumber(aseq) > tonumber(bseq)
end
local last = redis.call('LINDEX', KEYS[1], -1)
if last then
  local id = string.match(last, '"id":"([%d%-]+)"')
  if not id or newer(id, ARGV[1]) then
    return 'stale'
  end
end
redis.call('DEL', KEYS[1])
for i = 2, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
end
return 'rebuilt'
`

// RebuildSales rebuilds the sales lists of the assets whose list does not
// match their purchase entries (ledgers written before the lists existed),
// from the entries stream. It is safe while purchases run: a list that got
// a newer sale meanwhile is read again. It returns the assets it rebuilt.
func (s *Store) RebuildSales(ctx context.Context) ([]string, error) {
	for attempt := 0; attempt < 5; attempt++ {
		sales, last, err := s.scanSales(ctx)
		if err != nil {
			return nil, err
		}
		var rebuilt []string
		stale := false
		for _, a := range sortedKeys(sales) {
			want := sales[a]
			have, err := s.rdb.LRange(ctx, s.keys.Sales(a), 0, -1).Result()
			if err != nil {
				return rebuilt, fmt.Errorf("ledger: %w", err)
			}
			if sameIDs(have, want) {
				continue
			}
			args := []any{last}
			for _, e := range want {
				b, err := json.Marshal(e)
				if err != nil {
					return rebuilt, fmt.Errorf("ledger: %w", err)
				}
				args = append(args, string(b))
			}
			res, err := s.rebuild.Run(ctx, s.rdb, []string{s.keys.Sales(a)}, args...).Text()
			if err != nil {
				return rebuilt, fmt.Errorf("ledger: rebuild sales of %s: %w", a, err)
			}
			if res == "stale" {
				stale = true
				continue
			}
			rebuilt = append(rebuilt, a)
		}
		if !stale {
			return rebuilt, nil
		}
	}
	return nil, fmt.Errorf("ledger: rebuild sales: purchases kept arriving; run it again")
}

// scanSales reads every purchase entry, by asset, oldest first, and the
// newest entry ID read.
func (s *Store) scanSales(ctx context.Context) (map[string][]Entry, string, error) {
	out := map[string][]Entry{}
	start, last := "-", "0-0"
	for {
		msgs, err := s.rdb.XRangeN(ctx, s.keys.Entries(), start, "+", 1000).Result()
		if err != nil {
			return nil, "", fmt.Errorf("ledger: read entries: %w", err)
		}
		for _, m := range msgs {
			last = m.ID
			get := func(k string) string { v, _ := m.Values[k].(string); return v }
			if get("kind") != KindPurchase {
				continue
			}
			n, err := strconv.ParseInt(get("amount"), 10, 64)
			if err != nil {
				return nil, "", fmt.Errorf("ledger: entry %s: amount %q", m.ID, get("amount"))
			}
			out[get("asset_id")] = append(out[get("asset_id")], Entry{ID: m.ID, Kind: KindPurchase, Debit: get("debit"), Credit: get("credit"),
				Amount: n, PurchaseID: get("purchase_id"), AssetID: get("asset_id"), At: get("at")})
		}
		if len(msgs) < 1000 {
			return out, last, nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// sameIDs reports whether the sales list lines name exactly the entries.
func sameIDs(lines []string, entries []Entry) bool {
	if len(lines) != len(entries) {
		return false
	}
	for i, l := range lines {
		var e struct {
			ID string `json:"id"`
		}
		if json.Unmarshal([]byte(l), &e) != nil || e.ID != entries[i].ID {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// salesMismatch describes how an asset's sales list differs from its
// purchase entries, or "" when they agree.
func salesMismatch(assetID string, lines []string, entries []Entry) string {
	if sameIDs(lines, entries) {
		return ""
	}
	return fmt.Sprintf("asset %s: its sales list (%d lines) does not match its %d purchase entries: rebuild the lists with ledger.Store.RebuildSales",
		assetID, len(lines), len(entries))
}
