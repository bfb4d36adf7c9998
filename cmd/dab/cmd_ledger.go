package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/apiclient"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/watcher/intake"
)

// newKey makes an idempotency key for a command run; it is printed so that
// the same command can be retried safely with --key.
func newKey(prefix string) string { return prefix + "-" + randomHex(12) }

// runCredits: dab credits grant ACCOUNT N [--key K].
func runCredits(ctx context.Context, e *env, args []string) error {
	var key string
	var asJSON bool
	a, err := e.parse("credits", args, func(fs *flag.FlagSet) {
		fs.StringVar(&key, "key", "", "idempotency key: a retried grant with the same key grants once (default: a new key, printed)")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	if len(a.args) != 3 || a.args[0] != "grant" {
		return fmt.Errorf("%w: dab credits grant ACCOUNT CREDITS [--key K]", errUsage)
	}
	n, err := strconv.ParseInt(a.args[2], 10, 64)
	if err != nil {
		return fmt.Errorf("%w: credits %q: give a whole number from 1 to %d", errUsage, a.args[2], int64(ledger.CreditsMax))
	}
	if key == "" {
		key = newKey("grant")
	}
	// Refused here, before anything is sent: a server or Redis would refuse
	// it too, but only after the connection is made.
	if err := ledger.CheckGrant(key, a.args[1], n); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var res ledger.GrantResult
	err = a.viaServerOrRedis(ctx, func(c *apiclient.Client) (err error) {
		res, err = c.Grant(ctx, key, a.args[1], n)
		return err
	}, func(rdb redis.UniversalClient) (err error) {
		res, err = a.ledger(rdb).Grant(ctx, key, a.args[1], n)
		return err
	})
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(a, res)
	}
	fmt.Fprintf(a.stdout, "granted %d credits to %s (entry %s, key %s); balance %d\n", res.Credits, res.Account, res.EntryID, key, res.Balance)
	return nil
}

// runAccount: dab account show ACCOUNT [--json].
func runAccount(ctx context.Context, e *env, args []string) error {
	var asJSON bool
	a, err := e.parse("account", args, func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") })
	if err != nil {
		return err
	}
	if len(a.args) != 2 || a.args[0] != "show" {
		return fmt.Errorf("%w: dab account show ACCOUNT", errUsage)
	}
	var acct ledger.Account
	err = a.viaServerOrRedis(ctx, func(c *apiclient.Client) (err error) {
		acct, err = c.Account(ctx, a.args[1])
		return err
	}, func(rdb redis.UniversalClient) (err error) {
		acct, err = a.ledger(rdb).Account(ctx, a.args[1], 20)
		return err
	})
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(a, acct)
	}
	fmt.Fprintf(a.stdout, "%s: %d credits\n", acct.ID, acct.Balance)
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENTRY\tKIND\tFROM\tTO\tCREDITS\tREFERENCE\tAT")
	for _, en := range acct.Entries {
		ref := en.PurchaseID
		if ref == "" {
			ref = en.GrantKey
		}
		if en.AssetID != "" {
			ref += " (asset " + en.AssetID + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", en.ID, en.Kind, en.Debit, en.Credit, en.Amount, ref, en.At)
	}
	return tw.Flush()
}

// runPurchase: dab purchase --asset ID --buyer B --credits N [--key K]; it
// waits for the result and prints it.
func runPurchase(ctx context.Context, e *env, args []string) error {
	var (
		p       ledger.PurchaseRequest
		asJSON  bool
		timeout time.Duration
	)
	a, err := e.parse("purchase", args, func(fs *flag.FlagSet) {
		fs.StringVar(&p.AssetID, "asset", "", "asset ID (see `dab assets list`)")
		fs.StringVar(&p.BuyerID, "buyer", "", "buyer account (through DAB_SERVER a bound token buys as its own account: leave it out)")
		fs.Int64Var(&p.Credits, "credits", 0, "credits to pay (the asset's price, when it has one)")
		fs.StringVar(&p.PurchaseID, "key", "", "purchase ID, the idempotency key: sending the same purchase again buys once (default: a new key, printed)")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		fs.DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the result")
	})
	if err != nil {
		return err
	}
	if len(a.args) > 0 {
		return fmt.Errorf("%w: dab purchase takes flags only: --asset ID [--buyer B] --credits N [--key K]", errUsage)
	}
	if p.PurchaseID == "" {
		p.PurchaseID = newKey("purchase")
	}
	if err := p.Check(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var get func(context.Context, string) (ledger.PurchaseResult, error)
	var res ledger.PurchaseResult
	if a.cfg.Server != "" {
		c, err := a.apiClient()
		if err != nil {
			return err
		}
		if res, err = c.Purchase(ctx, p); err != nil {
			return err
		}
		get = c.GetPurchase
	} else {
		rdb, err := a.connectRedis(ctx)
		if err != nil {
			return err
		}
		defer rdb.Close()
		led := a.ledger(rdb)
		client := a.asynqClient(rdb)
		defer client.Close()
		// The same intake as the API's POST /v1/purchases: record, then queue.
		res, err = (&intake.Purchases{Ledger: led, Queue: client}).Submit(ctx, p)
		if errors.Is(err, api.ErrQueueUnavailable) {
			return fmt.Errorf("purchase %s: %w (run the same command with --key %s again)", p.PurchaseID, err, p.PurchaseID)
		}
		if err != nil {
			return err
		}
		get = led.GetPurchase
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for res.Status == ledger.StatusPending {
		select {
		case <-wctx.Done():
			return fmt.Errorf("purchase %s is still pending after %s (is a worker running?); check later with the same --key", p.PurchaseID, timeout)
		case <-time.After(100 * time.Millisecond):
		}
		if res, err = get(ctx, p.PurchaseID); err != nil {
			return err
		}
	}
	if asJSON {
		if err := writeJSON(a, res); err != nil {
			return err
		}
	} else if res.Status == ledger.StatusSucceeded {
		fmt.Fprintf(a.stdout, "purchase %s succeeded: %s paid %d credits to %s for asset %s (entry %s)\n", res.PurchaseID, res.BuyerID, res.Credits, res.Seller, res.AssetID, res.EntryID)
	} else {
		fmt.Fprintf(a.stdout, "purchase %s rejected (%s): %s; nothing was charged\n", res.PurchaseID, res.Reason, res.Detail)
	}
	if res.Status == ledger.StatusRejected {
		return errRejected
	}
	return nil
}

// errRejected makes a rejected purchase exit 1 after its result is printed.
var errRejected = errors.New("the purchase was rejected")

// runLedger: dab ledger verify.
func runLedger(ctx context.Context, e *env, args []string) error {
	var asJSON, journal, force bool
	a, err := e.parse("ledger", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		fs.BoolVar(&journal, "journal", false, "verify: also check Redis against the journal in the bucket")
		fs.BoolVar(&force, "force", false, "restore: delete the ledger in Redis first, even when it has entries")
	})
	if err != nil {
		return err
	}
	if len(a.args) != 1 || (a.args[0] != "verify" && a.args[0] != "rebuild-sales" && a.args[0] != "restore") {
		return fmt.Errorf("%w: dab ledger verify [--journal] | dab ledger rebuild-sales | dab ledger restore [--force]", errUsage)
	}
	rdb, err := a.connectRedis(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if a.args[0] == "restore" {
		return a.ledgerRestore(ctx, rdb, force, asJSON)
	}
	if journal {
		if err := a.ledgerVerifyJournal(ctx, rdb, asJSON); err != nil {
			return err
		}
	}
	if a.args[0] == "rebuild-sales" {
		// Sales made before each asset kept its own list of sales: rebuilt
		// from the entries (safe while purchases run; a second run changes
		// nothing).
		ids, err := a.ledger(rdb).RebuildSales(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "rebuilt the sales history of %d assets\n", len(ids))
		return nil
	}
	r, err := a.ledger(rdb).Verify(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		writeJSON(a, r)
	} else {
		fmt.Fprintf(a.stdout, "%d entries, %d accounts, %d credits issued, %d purchases succeeded, %d rejected\n", r.Entries, r.Accounts, r.Issued, r.Purchases, r.Rejected)
		for _, p := range r.Problems {
			fmt.Fprintln(a.stdout, "PROBLEM: "+p)
		}
	}
	if !r.OK() {
		return fmt.Errorf("ledger verify found %d problems", len(r.Problems))
	}
	if !asJSON {
		fmt.Fprintln(a.stdout, "ok: every balance is the sum of its entries, none but issuance is negative, balances sum to zero, every purchase is applied once")
	}
	return nil
}

// runListing: dab listing set ID CREDITS | dab listing remove ID. Through
// DAB_SERVER it acts as the token's account (the owner's bound token, or
// admin); locally (Redis) as the operator, for whoever owns the asset.
func runListing(ctx context.Context, e *env, args []string) error {
	var asJSON bool
	a, err := e.parse("listing", args, func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") })
	if err != nil {
		return err
	}
	const usage = "dab listing set ASSET_ID CREDITS | dab listing remove ASSET_ID"
	var credits int64
	switch {
	case len(a.args) == 3 && a.args[0] == "set":
		if credits, err = asset.ParsePrice(a.args[2]); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	case len(a.args) == 2 && a.args[0] == "remove":
	default:
		return fmt.Errorf("%w: %s", errUsage, usage)
	}
	id := a.args[1]
	if !asset.ValidID(id) {
		return fmt.Errorf("%w: %q is not an asset ID (20 hex digits): see `dab assets list`", errUsage, id)
	}
	var offer ledger.Offer
	if a.cfg.Server != "" {
		c, err := a.apiClient()
		if err != nil {
			return err
		}
		if a.args[0] == "set" {
			_, err = c.SetListing(ctx, id, credits)
		} else {
			_, err = c.ClearListing(ctx, id)
		}
		if err != nil {
			return err
		}
		rec, err := c.Asset(ctx, id)
		if err != nil {
			return err
		}
		offer = ledger.Offer{AssetID: id, Seller: rec.Owner}
	} else {
		rdb, err := a.connectRedis(ctx)
		if err != nil {
			return err
		}
		defer rdb.Close()
		led := a.ledger(rdb)
		if a.args[0] == "set" {
			offer, err = led.SetListing(ctx, id, ledger.AnyOwner, credits, "operator")
		} else {
			offer, err = led.ClearListing(ctx, id, ledger.AnyOwner, "operator")
		}
		if err != nil {
			return err
		}
	}
	if asJSON {
		return writeJSON(a, offer)
	}
	if a.args[0] == "remove" {
		fmt.Fprintf(a.stdout, "asset %s is not listed: not for sale\n", id)
	} else {
		fmt.Fprintf(a.stdout, "asset %s is listed by %s for %d credits\n", id, offer.Seller, credits)
	}
	return nil
}
