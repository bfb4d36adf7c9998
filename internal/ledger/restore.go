package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/redisbatch"
)

// ErrLedgerNotEmpty: a restore into a Redis that has ledger entries.
var ErrLedgerNotEmpty = errors.New("the ledger has entries")

// ErrNotJournaled: a forced restore over entries the journal does not have.
var ErrNotJournaled = errors.New("entries not journaled yet")

// RestoreResult is what Restore did.
type RestoreResult struct {
	Entries   int    `json:"entries"`
	Grants    int    `json:"grants"`
	Purchases int    `json:"purchases"`
	Prices    int    `json:"prices"`
	Listings  int    `json:"listings"`
	LastID    string `json:"last_id,omitempty"`
	// MissingAssets are assets named by entries whose record is not in
	// Redis: their owner, price and listing could not be set (run dab
	// reconcile, then restore again with force).
	MissingAssets []string `json:"missing_assets,omitempty"`
}

// Restore rebuilds the ledger from the journal: balances, the entries
// stream (with the original IDs), account histories, grants' and
// succeeded purchases' stored results, the purchases set, asset owners,
// prices and listings, and each asset's sales. It refuses
// (ErrLedgerNotEmpty) when the entries stream is not empty, unless force:
// then every ledger key is deleted first. Rejected purchases are not in the
// journal (they moved nothing) and are not restored. Run it while nothing
// writes to the ledger (stop dab work, watch and serve).
func (s *Store) Restore(ctx context.Context, o JournalObjects, prefix string, force bool) (RestoreResult, error) {
	var r RestoreResult
	n, err := s.rdb.XLen(ctx, s.keys.Entries()).Result()
	if err != nil {
		return r, fmt.Errorf("ledger: restore: %w", err)
	}
	if n > 0 && !force {
		return r, fmt.Errorf("%w (%d): restore only into an empty ledger, or force it to delete the ledger first", ErrLedgerNotEmpty, n)
	}
	if force && n > 0 {
		// Deleting entries the journal does not have would lose them for
		// good: they must reach the journal first.
		jr, err := s.VerifyJournal(ctx, o, prefix)
		if err != nil {
			return r, err
		}
		if left := jr.Behind + jr.NotJournaled; left > 0 {
			return r, fmt.Errorf("%w: %d of the %d entries in Redis are not in the journal, and a forced restore would delete them; wait until dab work has journaled them (every DAB_JOURNAL_INTERVAL) and dab ledger verify --journal no longer reports them",
				ErrNotJournaled, left, n)
		}
	}
	if force {
		if err := s.deleteLedger(ctx); err != nil {
			return r, err
		}
	}
	exists := map[string]bool{}
	missing := map[string]bool{}
	assetExists := func(id string) (bool, error) {
		if v, ok := exists[id]; ok {
			return v, nil
		}
		n, err := s.rdb.Exists(ctx, s.assets.Record(id)).Result()
		if err != nil {
			return false, fmt.Errorf("ledger: restore: %w", err)
		}
		exists[id] = n == 1
		if n == 0 {
			missing[id] = true
		}
		return n == 1, nil
	}
	err = ReadJournal(ctx, o, prefix, func(key string, e map[string]string) error {
		id, kind, amount := e["id"], e["kind"], e["amount"]
		var assetOK bool
		if e["asset_id"] != "" {
			var err error
			if assetOK, err = assetExists(e["asset_id"]); err != nil {
				return err
			}
		}
		values := make([]string, 0, 2*len(e))
		for _, k := range sortedKeys(e) {
			if k != "id" {
				values = append(values, k, e[k])
			}
		}
		pipe := s.rdb.TxPipeline()
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: s.keys.Entries(), ID: id, Values: values})
		switch kind {
		case KindGrant, KindPurchase:
			n, err := strconv.ParseInt(amount, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("ledger: restore: %s: entry %s: amount %q", key, id, amount)
			}
			line, err := historyLine(e, n)
			if err != nil {
				return err
			}
			if n > 0 || kind == KindGrant {
				pipe.HIncrBy(ctx, s.keys.Balances(), e["debit"], -n)
				pipe.HIncrBy(ctx, s.keys.Balances(), e["credit"], n)
			}
			pipe.LPush(ctx, s.keys.History(e["debit"]), line)
			pipe.LPush(ctx, s.keys.History(e["credit"]), line)
			if kind == KindGrant {
				r.Grants++
				pipe.HSet(ctx, s.keys.Grant(e["grant_key"]), "params", e["credit"]+"|"+amount, "entry_id", id)
				break
			}
			r.Purchases++
			aid, buyer, pid := e["asset_id"], e["debit"], e["purchase_id"]
			pipe.RPush(ctx, s.keys.Sales(aid), line)
			pipe.HSet(ctx, s.keys.Purchase(pid), "status", StatusSucceeded, "entry_id", id, "seller", e["credit"],
				"params", aid+"|"+buyer+"|"+amount, "asset_id", aid, "buyer", buyer, "credits", amount, "updated_at", e["at"])
			pipe.SAdd(ctx, s.keys.Purchases(), pid)
			if assetOK {
				pipe.HSet(ctx, s.assets.Record(aid), "owner", buyer)
				pipe.HDel(ctx, s.assets.Record(aid), "listing")
			}
		case KindPrice, KindListing:
			if kind == KindPrice {
				r.Prices++
			} else {
				r.Listings++
			}
			if assetOK {
				if e["action"] == "clear" {
					pipe.HDel(ctx, s.assets.Record(e["asset_id"]), kind)
				} else {
					pipe.HSet(ctx, s.assets.Record(e["asset_id"]), kind, amount)
				}
			}
		default:
			return fmt.Errorf("ledger: restore: %s: entry %s has an unknown kind %q", key, id, kind)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("ledger: restore: entry %s: %w", id, err)
		}
		r.Entries++
		r.LastID = id
		return nil
	})
	if err != nil {
		return r, err
	}
	if r.LastID != "" {
		// The journal has everything up to here: the writer goes on after it.
		if err := s.rdb.Set(ctx, s.keys.JournalPos(), r.LastID, 0).Err(); err != nil {
			return r, fmt.Errorf("ledger: restore: %w", err)
		}
	}
	for a := range missing {
		r.MissingAssets = append(r.MissingAssets, a)
	}
	sort.Strings(r.MissingAssets)
	return r, nil
}

// historyLine is the history (and sales) line of a grant or purchase entry.
func historyLine(e map[string]string, amount int64) (string, error) {
	en := Entry{ID: e["id"], Kind: e["kind"], Debit: e["debit"], Credit: e["credit"], Amount: amount,
		PurchaseID: e["purchase_id"], AssetID: e["asset_id"], GrantKey: e["grant_key"], At: e["at"]}
	b, err := json.Marshal(en)
	return string(b), err
}

// deleteLedger deletes every key of the ledger (balances, entries,
// histories, purchases, grants, sales, the journal position).
func (s *Store) deleteLedger(ctx context.Context) error {
	pattern := s.keys.base() + "*"
	del := func(ctx context.Context, c redis.UniversalClient) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			if err := c.Del(ctx, iter.Val()).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	var err error
	if cc, ok := redisbatch.Unwrap(s.rdb).(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return del(ctx, c) })
	} else {
		err = del(ctx, s.rdb)
	}
	if err != nil {
		return fmt.Errorf("ledger: restore: delete the ledger: %w", err)
	}
	return nil
}

// JournalReport is what VerifyJournal found.
type JournalReport struct {
	Journaled int `json:"journaled"`
	// Behind counts entries in Redis after the journal's last one (not
	// journaled yet; not a problem).
	Behind int `json:"behind"`
	// NotJournaled counts entries in Redis, older than the journal's
	// last, that the journal does not have (each is also a problem).
	NotJournaled int      `json:"not_journaled"`
	Problems     []string `json:"problems"`
}

// OK reports whether no problem was found.
func (r JournalReport) OK() bool { return len(r.Problems) == 0 }

// VerifyJournal checks Redis against the journal: every journaled entry is
// in the stream with the same fields, and every stream entry up to the
// journal's last is in the journal.
func (s *Store) VerifyJournal(ctx context.Context, o JournalObjects, prefix string) (JournalReport, error) {
	var r JournalReport
	journaled := map[string]bool{}
	last := "0-0"
	err := ReadJournal(ctx, o, prefix, func(key string, e map[string]string) error {
		r.Journaled++
		id := e["id"]
		journaled[id], last = true, id
		msgs, err := s.rdb.XRange(ctx, s.keys.Entries(), id, id).Result()
		if err != nil {
			return fmt.Errorf("ledger: verify journal: %w", err)
		}
		if len(msgs) != 1 {
			r.Problems = append(r.Problems, fmt.Sprintf("entry %s (%s) is in the journal, not in Redis", id, key))
			return nil
		}
		have := map[string]string{"id": id}
		for k, v := range msgs[0].Values {
			have[k], _ = v.(string)
		}
		if !sameFields(have, e) {
			hb, _ := json.Marshal(have)
			eb, _ := json.Marshal(e)
			r.Problems = append(r.Problems, fmt.Sprintf("entry %s differs: Redis %s, journal (%s) %s", id, hb, key, eb))
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	start := "-"
	for {
		msgs, err := s.rdb.XRangeN(ctx, s.keys.Entries(), start, "+", 1000).Result()
		if err != nil {
			return r, fmt.Errorf("ledger: verify journal: %w", err)
		}
		for _, m := range msgs {
			if idAfter(m.ID, last) {
				r.Behind++
			} else if !journaled[m.ID] {
				r.NotJournaled++
				r.Problems = append(r.Problems, fmt.Sprintf("entry %s is in Redis, not in the journal", m.ID))
			}
		}
		if len(msgs) < 1000 {
			break
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	return r, nil
}

func sameFields(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}
