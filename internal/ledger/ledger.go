// Package ledger keeps credits: balances, immutable double-entry entries and
// purchases, all in Redis and all changed by Lua scripts so that each change
// is atomic. Rules (after TigerBeetle): every transfer has an ID, entries are
// never changed, no account but issuance goes below zero, and every balance
// can be explained entry by entry. Purchases follow Stripe's idempotency
// semantics: the same purchase ID with the same parameters returns the first
// result; with other parameters it is a conflict.
package ledger

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/event"
)

// Issuance is the account every grant comes from; its balance is minus all
// credits ever issued.
const Issuance = "issuance"

// Bounds on amounts. The scripts compute in Lua 5.1 numbers, which are
// doubles: integers are exact only up to 2^53. A bound on one amount is not
// enough, since balances add amounts up; but no balance except issuance is
// negative and all balances sum to zero, so no balance can be larger than
// the credits ever issued. The grant script keeps that total at most
// IssuanceMax, and IssuanceMax + CreditsMax stays below 2^53, so every
// balance, amount and sum a script computes is exact (and far inside the
// int64 of Redis's HINCRBY).
const (
	// CreditsMax is the largest amount of one grant, purchase, price or
	// listing. It is asset.CreditsMax, so that the asset records (which
	// parse uploaders' prices) and the ledger share one number.
	CreditsMax = asset.CreditsMax
	// IssuanceMax is the most credits that may ever be issued, all grants
	// together (credits never return to issuance).
	IssuanceMax = 8 * CreditsMax
)

// The build fails if the bounds ever leave Lua's exact integers.
const _ uint64 = 1<<53 - 1 - (IssuanceMax + CreditsMax)

// MaxCredits is the old name of CreditsMax.
//
// Deprecated: use CreditsMax.
const MaxCredits = CreditsMax

// Sentinel errors.
var (
	ErrConflict = errors.New("same ID, different parameters")
	ErrInvalid  = errors.New("invalid input")
	ErrNotFound = errors.New("not found")
	// ErrIssuanceLimit: the grant would take the credits ever issued past
	// IssuanceMax. Retrying does not help; a smaller grant may.
	ErrIssuanceLimit = errors.New("issuance limit reached")
	// ErrNotOwned: a listing change for an asset nobody owns (the house
	// sells it at its price instead).
	ErrNotOwned = errors.New("not_owned")
	// ErrNotOwner: a listing change by someone who does not act for the
	// asset's owner.
	ErrNotOwner = errors.New("not_owner")
	// ErrOwned: a price for an asset somebody owns (its owner lists it
	// instead).
	ErrOwned = errors.New("owned")
)

// Purchase statuses.
const (
	StatusPending   = "pending"
	StatusSucceeded = "succeeded"
	StatusRejected  = "rejected"
)

// Rejection reasons.
const (
	ReasonUnknownAsset        = "unknown_asset"
	ReasonAlreadyOwner        = "already_owner"
	ReasonWrongPrice          = "wrong_price"
	ReasonInsufficientCredits = "insufficient_credits"
	// ReasonNotForSale: an owned asset that is not listed, or an unowned
	// asset without a price.
	ReasonNotForSale = "not_for_sale"
)

// Entry kinds. Grants and purchases move credits; price and listing
// changes move none and are in the entries stream only.
const (
	KindGrant    = "grant"
	KindPurchase = "purchase"
	KindPrice    = "price"
	KindListing  = "listing"
)

// AnyOwner, as the owner of a listing change, lets it be made for whoever
// owns the asset (admin).
const AnyOwner = "*"

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`)

// CheckAccount validates an account ID: 1-128 letters, digits and . _ : @ -.
func CheckAccount(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: account %q: use 1 to 128 letters, digits, '.', '_', ':', '@' or '-', starting with a letter or digit", ErrInvalid, id)
	}
	return nil
}

// CheckPurchaseID validates a purchase ID (the idempotency key).
func CheckPurchaseID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: purchase id %q: use 1 to 128 letters, digits, '.', '_', ':', '@' or '-'", ErrInvalid, id)
	}
	return nil
}

// CheckCredits validates the amount of a grant: 1 to CreditsMax.
func CheckCredits(n int64) error {
	if n <= 0 || n > CreditsMax {
		return fmt.Errorf("%w: credits must be a whole number from 1 to %d, got %d", ErrInvalid, int64(CreditsMax), n)
	}
	return nil
}

// CheckPrice validates the amount of a price, a listing or a purchase: 0
// (free) to CreditsMax.
func CheckPrice(n int64) error {
	if n < 0 || n > CreditsMax {
		return fmt.Errorf("%w: credits must be a whole number from 0 (free) to %d, got %d", ErrInvalid, int64(CreditsMax), n)
	}
	return nil
}

// CheckGrant validates a grant's key, account and amount, so that clients
// can refuse a bad grant before they send it.
func CheckGrant(key, account string, credits int64) error {
	if err := CheckPurchaseID(key); err != nil {
		return fmt.Errorf("%w: grant key %q: use 1 to 128 letters, digits, '.', '_', ':', '@' or '-'", ErrInvalid, key)
	}
	if err := CheckAccount(account); err != nil {
		return err
	}
	if account == Issuance {
		return fmt.Errorf("%w: credits cannot be granted to the issuance account", ErrInvalid)
	}
	return CheckCredits(credits)
}

// Keys names the ledger's Redis keys (same hash tag as the asset records).
type Keys struct{ Prefix string }

func (k Keys) base() string                  { return k.Prefix + asset.HashTag + ":ledger:" }
func (k Keys) Balances() string              { return k.base() + "balances" }
func (k Keys) Entries() string               { return k.base() + "entries" }
func (k Keys) History(account string) string { return k.base() + "history:" + account }
func (k Keys) Purchase(id string) string     { return k.base() + "purchase:" + id }
func (k Keys) Purchases() string             { return k.base() + "purchases" }
func (k Keys) Grant(key string) string       { return k.base() + "grant:" + key }

// Sales is the list of an asset's sales, oldest first: one history line
// per purchase entry.
func (k Keys) Sales(assetID string) string { return k.base() + "sales:" + assetID }

//go:embed purchase.lua
var purchaseLua string

//go:embed grant.lua
var grantLua string

//go:embed offer.lua
var offerLua string

// acceptLua records a purchase as pending unless it is known.
//
// KEYS[1] purchase hash
// ARGV[1] params ("asset|buyer|credits")   ARGV[2] asset   ARGV[3] buyer
// ARGV[4] credits   ARGV[5] time
//
// Returns {"new"} or {status, stored params}.
const acceptLua = `
local status = redis.call('HGET', KEYS[1], 'status')
if status then
  return {status, redis.call('HGET', KEYS[1], 'params')}
end
redis.call('HSET', KEYS[1], 'status', 'pending', 'params', ARGV[1], 'asset_id', ARGV[2],
  'buyer', ARGV[3], 'credits', ARGV[4], 'created_at', ARGV[5])
return {'new'}
`

// Store is the ledger on one Redis.
type Store struct {
	rdb      redis.UniversalClient
	keys     Keys
	assets   asset.Keys
	events   event.Keys
	house    string
	purchase *redis.Script
	grant    *redis.Script
	accept   *redis.Script
	offer    *redis.Script
	rebuild  *redis.Script
	opts     Options
}

// New returns a Store; house receives the price of assets that have no
// owner and no uploader account. Its writes wait for no replicas
// (NewWithOptions). On a redisbatch.Client (dab's, one per process) the
// purchases applied at once share round trips.
func New(rdb redis.UniversalClient, prefix, house string) *Store {
	return &Store{rdb: rdb, keys: Keys{Prefix: prefix}, assets: asset.Keys{Prefix: prefix}, events: event.Keys{Prefix: prefix}, house: house,
		purchase: redis.NewScript(purchaseLua), grant: redis.NewScript(grantLua), accept: redis.NewScript(acceptLua),
		offer: redis.NewScript(offerLua), rebuild: redis.NewScript(rebuildSalesLua)}
}

// Keys returns the key names.
func (s *Store) Keys() Keys { return s.keys }

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// eventArgs are the trimming arguments of the events stream for a script
// that appends to it.
func (s *Store) eventArgs() (maxLen int, minID string) { return s.opts.Events.Args(time.Now()) }

// Entry is one immutable ledger entry.
type Entry struct {
	ID         string `json:"id"`
	Kind       string `json:"kind"` // grant or purchase (KindGrant, KindPurchase)
	Debit      string `json:"debit"`
	Credit     string `json:"credit"`
	Amount     int64  `json:"amount"`
	PurchaseID string `json:"purchase_id,omitempty"`
	AssetID    string `json:"asset_id,omitempty"`
	GrantKey   string `json:"grant_key,omitempty"`
	At         string `json:"at"`
}

// GrantResult is the outcome of a grant.
type GrantResult struct {
	Account string `json:"account"`
	Credits int64  `json:"credits"`
	EntryID string `json:"entry_id"`
	Balance int64  `json:"balance"`
}

// Grant gives credits to an account, from issuance, once per key. It
// returns ErrIssuanceLimit when the grant would take the credits ever
// issued past IssuanceMax; nothing moves then.
func (s *Store) Grant(ctx context.Context, key, account string, credits int64) (GrantResult, error) {
	if err := CheckGrant(key, account, credits); err != nil {
		return GrantResult{}, err
	}
	keys := []string{s.keys.Grant(key), s.keys.Balances(), s.keys.Entries(), s.keys.History(account), s.keys.History(Issuance), s.events.Stream()}
	maxLen, minID := s.eventArgs()
	var res []string
	err := s.write(ctx, "grant "+key, func(c redis.Scripter) error {
		var err error
		res, err = s.grant.Run(ctx, c, keys, account, credits, Issuance, now(), key, int64(IssuanceMax), maxLen, minID).StringSlice()
		if err != nil {
			return fmt.Errorf("ledger: grant: %w", err)
		}
		return nil
	})
	if err != nil {
		return GrantResult{}, err
	}
	switch res[0] {
	case "conflict":
		return GrantResult{}, fmt.Errorf("%w: grant key %q was used for %q", ErrConflict, key, res[1])
	case "issuance_limit":
		return GrantResult{}, issuanceLimitError(res[1], credits)
	case "invalid":
		return GrantResult{}, fmt.Errorf("%w: %s", ErrInvalid, res[1])
	}
	bal, err := strconv.ParseInt(res[2], 10, 64)
	if err != nil {
		return GrantResult{}, fmt.Errorf("ledger: grant: balance %q: %w", res[2], err)
	}
	return GrantResult{Account: account, Credits: credits, EntryID: res[1], Balance: bal}, nil
}

// issuanceLimitError says what was issued, what is left and what to do;
// balance is the issuance account's balance as the script read it.
func issuanceLimitError(balance string, credits int64) error {
	bal, _ := strconv.ParseInt(balance, 10, 64)
	issued := -bal
	fix := "no more credits can be granted"
	if left := int64(IssuanceMax) - issued; left > 0 {
		fix = fmt.Sprintf("grant at most %d", left)
	}
	return fmt.Errorf("%w: %d credits have been issued and at most %d may ever be (ledger.IssuanceMax keeps every balance exact); a grant of %d would pass that: %s",
		ErrIssuanceLimit, issued, int64(IssuanceMax), credits, fix)
}

// PurchaseRequest is what a buyer asks for. Credits is what the asset is
// offered at (its price or listing), 0 for a free one.
type PurchaseRequest struct {
	PurchaseID string `json:"purchase_id"`
	AssetID    string `json:"asset_id"`
	BuyerID    string `json:"buyer_id"`
	Credits    int64  `json:"credits"`
}

// Check validates a purchase request.
func (p PurchaseRequest) Check() error {
	if err := CheckPurchaseID(p.PurchaseID); err != nil {
		return err
	}
	if !asset.ValidID(p.AssetID) {
		return fmt.Errorf("%w: asset_id %q is not an asset ID (20 hex digits)", ErrInvalid, p.AssetID)
	}
	if err := CheckAccount(p.BuyerID); err != nil {
		return fmt.Errorf("buyer_id: %w", err)
	}
	if p.BuyerID == Issuance {
		return fmt.Errorf("%w: the issuance account cannot buy", ErrInvalid)
	}
	return CheckPrice(p.Credits)
}

func (p PurchaseRequest) params() string {
	return p.AssetID + "|" + p.BuyerID + "|" + strconv.FormatInt(p.Credits, 10)
}

// PurchaseResult is a purchase's state.
type PurchaseResult struct {
	PurchaseID string `json:"purchase_id"`
	Status     string `json:"status"` // pending, succeeded, rejected
	Reason     string `json:"reason,omitempty"`
	Detail     string `json:"detail,omitempty"`
	AssetID    string `json:"asset_id"`
	BuyerID    string `json:"buyer_id"`
	Credits    int64  `json:"credits"`
	Seller     string `json:"seller,omitempty"`
	EntryID    string `json:"entry_id,omitempty"`
}

// Accept records a purchase as pending (before its task is queued). It
// returns created=false with the stored state for a known ID, and
// ErrConflict when the known ID has other parameters.
func (s *Store) Accept(ctx context.Context, p PurchaseRequest) (PurchaseResult, bool, error) {
	if err := p.Check(); err != nil {
		return PurchaseResult{}, false, err
	}
	res, err := s.accept.Run(ctx, s.rdb, []string{s.keys.Purchase(p.PurchaseID)}, p.params(), p.AssetID, p.BuyerID, p.Credits, now()).StringSlice()
	if err != nil {
		return PurchaseResult{}, false, fmt.Errorf("ledger: accept: %w", err)
	}
	if res[0] == "new" {
		return PurchaseResult{PurchaseID: p.PurchaseID, Status: StatusPending, AssetID: p.AssetID, BuyerID: p.BuyerID, Credits: p.Credits}, true, nil
	}
	if res[1] != p.params() {
		return PurchaseResult{}, false, fmt.Errorf("%w: purchase %s was made with asset|buyer|credits %s", ErrConflict, p.PurchaseID, res[1])
	}
	r, err := s.GetPurchase(ctx, p.PurchaseID)
	return r, false, err
}

// Apply runs a purchase: exactly once, however often it is called. With
// Options.MinReplicas set it returns ErrNotReplicated while the result has
// not reached enough replicas (GetPurchase reports it pending until then);
// calling it again waits again.
func (s *Store) Apply(ctx context.Context, p PurchaseRequest) (PurchaseResult, error) {
	if err := p.Check(); err != nil {
		return PurchaseResult{}, err
	}
	if s.replicated() {
		return s.applyReplicated(ctx, p)
	}
	return s.apply(ctx, s.rdb, p)
}

// apply runs the purchase script through c.
func (s *Store) apply(ctx context.Context, c redis.Scripter, p PurchaseRequest) (PurchaseResult, error) {
	// The seller's history key must be named up front (Redis Cluster), so
	// the first call guesses the house, the seller of every unowned asset
	// without an uploader account; when the guess is wrong the script
	// changes nothing and answers "stale" with the seller it found, and the
	// next call names that one. Guessing costs no round trip where a lookup
	// before each call would cost one.
	seller := s.house
	for attempt := 0; attempt < 10; attempt++ {
		keys := []string{s.keys.Purchase(p.PurchaseID), s.assets.Record(p.AssetID), s.keys.Balances(), s.keys.Entries(),
			s.keys.History(p.BuyerID), s.keys.History(seller), s.keys.Purchases(), s.keys.Sales(p.AssetID), s.events.Stream()}
		maxLen, minID := s.eventArgs()
		res, err := s.purchase.Run(ctx, c, keys, p.PurchaseID, p.AssetID, p.BuyerID, p.Credits, seller, s.house, now(), maxLen, minID).StringSlice()
		if err != nil {
			return PurchaseResult{}, fmt.Errorf("ledger: purchase %s: %w", p.PurchaseID, err)
		}
		r := PurchaseResult{PurchaseID: p.PurchaseID, AssetID: p.AssetID, BuyerID: p.BuyerID, Credits: p.Credits}
		switch res[0] {
		case "stale":
			seller = res[1]
			continue
		case "conflict":
			return PurchaseResult{}, fmt.Errorf("%w: purchase %s was made with asset|buyer|credits %s", ErrConflict, p.PurchaseID, res[1])
		case "invalid":
			return PurchaseResult{}, fmt.Errorf("%w: purchase %s: %s", ErrInvalid, p.PurchaseID, res[1])
		case "succeeded":
			r.Status, r.EntryID, r.Seller = StatusSucceeded, res[1], res[2]
		default:
			r.Status, r.Reason, r.Detail = StatusRejected, res[1], res[2]
		}
		return r, nil
	}
	return PurchaseResult{}, fmt.Errorf("ledger: purchase %s: the asset's owner kept changing; retry", p.PurchaseID)
}

// GetPurchase reads a purchase's state. A purchase applied on the Redis
// master whose result has not been acknowledged by the replicas yet
// (Options.MinReplicas) is reported pending, whatever Options this Store
// has: the mark is in Redis.
func (s *Store) GetPurchase(ctx context.Context, id string) (PurchaseResult, error) {
	return s.getPurchase(ctx, id, false)
}

// getPurchase reads a purchase's state; raw reports the stored status even
// while the purchase is marked unreplicated.
func (s *Store) getPurchase(ctx context.Context, id string, raw bool) (PurchaseResult, error) {
	if err := CheckPurchaseID(id); err != nil {
		return PurchaseResult{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	m, err := s.rdb.HGetAll(ctx, s.keys.Purchase(id)).Result()
	if err != nil {
		return PurchaseResult{}, fmt.Errorf("ledger: %w", err)
	}
	if len(m) == 0 {
		return PurchaseResult{}, fmt.Errorf("purchase %s: %w", id, ErrNotFound)
	}
	credits, _ := strconv.ParseInt(m["credits"], 10, 64)
	if m[fieldUnreplicated] != "" && !raw {
		return PurchaseResult{PurchaseID: id, Status: StatusPending, AssetID: m["asset_id"], BuyerID: m["buyer"], Credits: credits}, nil
	}
	return PurchaseResult{PurchaseID: id, Status: m["status"], Reason: m["reason"], Detail: m["detail"],
		AssetID: m["asset_id"], BuyerID: m["buyer"], Credits: credits, Seller: m["seller"], EntryID: m["entry_id"]}, nil
}

// Account is a balance with its latest entries.
type Account struct {
	ID      string  `json:"id"`
	Balance int64   `json:"balance"`
	Entries []Entry `json:"entries"`
}

// Balance is one account's balance, in a list of accounts.
type Balance struct {
	ID      string `json:"id"`
	Balance int64  `json:"balance"`
}

// Balances lists up to limit accounts that have a balance, by name (the
// house and issuance accounts included), and whether there are more.
func (s *Store) Balances(ctx context.Context, limit int) ([]Balance, bool, error) {
	var out []Balance
	var cursor uint64
	for {
		kv, next, err := s.rdb.HScan(ctx, s.keys.Balances(), cursor, "*", 1000).Result()
		if err != nil {
			return nil, false, fmt.Errorf("ledger: list accounts: %w", err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			n, err := strconv.ParseInt(kv[i+1], 10, 64)
			if err != nil {
				return nil, false, fmt.Errorf("ledger: balance of %s is %q, not a whole number: run dab ledger verify", kv[i], kv[i+1])
			}
			out = append(out, Balance{ID: kv[i], Balance: n})
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// Account reads a balance (0 for an account never seen) and its newest entries.
func (s *Store) Account(ctx context.Context, id string, recent int) (Account, error) {
	if err := CheckAccount(id); err != nil {
		return Account{}, err
	}
	bal, err := s.rdb.HGet(ctx, s.keys.Balances(), id).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Account{}, fmt.Errorf("ledger: %w", err)
	}
	lines, err := s.rdb.LRange(ctx, s.keys.History(id), 0, int64(recent)-1).Result()
	if err != nil {
		return Account{}, fmt.Errorf("ledger: %w", err)
	}
	a := Account{ID: id, Balance: bal, Entries: make([]Entry, 0, len(lines))}
	for _, l := range lines {
		e, err := s.historyEntry(ctx, l)
		if err != nil {
			return Account{}, fmt.Errorf("ledger: history of %s is damaged: %w", id, err)
		}
		a.Entries = append(a.Entries, e)
	}
	return a, nil
}

// historyEntry decodes one history line. Lines written before the scripts
// spliced amounts in as integers carry cjson's "%.14g" rendering (1e+14,
// 1.2345678901234e+14: digits lost); their exact amount is read from the
// entries stream, which always kept the decimal string.
func (s *Store) historyEntry(ctx context.Context, line string) (Entry, error) {
	var l struct {
		Entry
		Amount json.Number `json:"amount"` // hides Entry.Amount
	}
	if err := json.Unmarshal([]byte(line), &l); err != nil {
		return Entry{}, err
	}
	e := l.Entry
	n, err := strconv.ParseInt(string(l.Amount), 10, 64)
	if err != nil {
		msgs, xerr := s.rdb.XRange(ctx, s.keys.Entries(), l.ID, l.ID).Result()
		if xerr != nil {
			return Entry{}, fmt.Errorf("entry %s: amount %s: read the entry: %w", l.ID, l.Amount, xerr)
		}
		if len(msgs) != 1 {
			return Entry{}, fmt.Errorf("entry %s: amount %s is not a whole number and the entry is missing", l.ID, l.Amount)
		}
		amount, _ := msgs[0].Values["amount"].(string)
		if n, err = strconv.ParseInt(amount, 10, 64); err != nil {
			return Entry{}, fmt.Errorf("entry %s: amount %q: %w", l.ID, amount, err)
		}
	}
	e.Amount = n
	return e, nil
}
