package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/apiclient"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/watcher/market"
)

// newKey makes an idempotency key for a command run; it is printed so that
// the same command can be retried safely with --key.
func newKey(prefix string) string { return prefix + "-" + randomHex(12) }

func (c *cli) creditsCmd() *cobra.Command {
	var (
		key    string
		asJSON bool
	)
	grant := &cobra.Command{
		Use:   "grant ACCOUNT CREDITS [--key KEY] [--json]",
		Short: "grant credits to an account (from issuance)",
		Long: `Grant CREDITS (a whole number from 1) to ACCOUNT, from the issuance account.
The key makes a retry grant once: the same key with the same account and
amount grants nothing more, with another amount it is refused. Without
--key a new key is made and printed.`,
		Example: `  dab credits grant alice 20
  dab credits grant alice 20 --key welcome-alice   # safe to run again`,
		Args:              exactArgs(2),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			account := args[0]
			n, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil {
				return usagef("credits %q: give a whole number from 1 to %d", args[1], int64(ledger.CreditsMax))
			}
			if key == "" {
				key = newKey("grant")
			}
			// Refused here, before anything is sent: a server or Redis would
			// refuse it too, but only after the connection is made.
			if err := ledger.CheckGrant(key, account, n); err != nil {
				return usageError{err}
			}
			a, err := c.app(args, roleClient)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var res ledger.GrantResult
			err = a.viaServerOrRedis(ctx, func(c *apiclient.Client) (err error) {
				res, err = c.Grant(ctx, key, account, n)
				return err
			}, func(rdb redis.UniversalClient) (err error) {
				res, err = a.ledger(rdb).Grant(ctx, key, account, n)
				return err
			})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a, res)
			}
			outf(a.stdout, "granted %s to %s (entry %s, key %s); balance %d\n", plural(res.Credits, "credit", "credits"), res.Account, res.EntryID, key, res.Balance)
			return nil
		},
	}
	grant.Flags().StringVar(&key, "key", "", "idempotency `KEY`: a retried grant with the same key grants once (default: a new key, printed)")
	grant.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd := &cobra.Command{
		Use:     "credits VERB",
		Short:   "grant credits",
		Example: `  dab credits grant alice 20`,
	}
	cmd.AddCommand(grant)
	return cmd
}

func (c *cli) accountCmd() *cobra.Command {
	var asJSON bool
	show := &cobra.Command{
		Use:   "show ACCOUNT [--json]",
		Short: "show an account's balance and newest entries",
		Example: `  dab account show alice
  dab account show house --json`,
		Args:              exactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := c.app(args, roleClient)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var acct ledger.Account
			err = a.viaServerOrRedis(ctx, func(c *apiclient.Client) (err error) {
				acct, err = c.Account(ctx, args[0])
				return err
			}, func(rdb redis.UniversalClient) (err error) {
				acct, err = a.ledger(rdb).Account(ctx, args[0], 20)
				return err
			})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a, acct)
			}
			outf(a.stdout, "%s: %s\n", acct.ID, plural(acct.Balance, "credit", "credits"))
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
				outf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", en.ID, en.Kind, en.Debit, en.Credit, en.Amount, ref, en.At)
			}
			return tw.Flush()
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd := &cobra.Command{
		Use:     "account VERB",
		Short:   "show a balance and its entries",
		Example: `  dab account show alice`,
	}
	cmd.AddCommand(show)
	return cmd
}

func (c *cli) purchaseCmd() *cobra.Command {
	var (
		p       ledger.PurchaseRequest
		asJSON  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "purchase --asset ID [--buyer ACCOUNT] --credits N [--key KEY] [--timeout DURATION] [--json]",
		Short: "buy an asset for credits; waits for the result",
		Long: `Buy an asset: the purchase is recorded, queued and applied by a worker; the
command waits and prints the result (exit 1 when it is rejected, with
nothing charged). The purchase ID (--key, or a new one, printed) makes a
retry buy once; dab tasks show takes it too.

Through DAB_SERVER a token bound to an account buys as that account (leave
--buyer out); a broker or admin token names the buyer. Locally (Redis) the
buyer is required.`,
		Example: `  dab purchase --asset 0123456789abcdef0123 --buyer alice --credits 5
  dab purchase --asset 0123456789abcdef0123 --buyer alice --credits 5 --key order-1234
  DAB_SERVER=https://dab.example.org DAB_TOKEN=... dab purchase --asset 0123456789abcdef0123 --credits 5`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Checked before anything connects: a usage error is one,
			// whatever state Redis or the server is in.
			if p.AssetID == "" {
				return usagef("--asset is required: the ID of the asset to buy (see dab assets list)")
			}
			if !cmd.Flags().Changed("credits") {
				// No default: a purchase without an amount would offer 0,
				// buying a free asset by mistake or recording a rejection.
				return usagef("--credits is required: the asset's price or listing, as dab assets show ID says (0 for a free asset)")
			}
			a, err := c.app(args, roleClient)
			if err != nil {
				return err
			}
			return a.purchase(cmd.Context(), p, timeout, asJSON)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&p.AssetID, "asset", "", "`ID` of the asset to buy (see dab assets list)")
	fs.StringVar(&p.BuyerID, "buyer", "", "the `ACCOUNT` that pays (through DAB_SERVER a token bound to an account buys as it: leave this out)")
	fs.Int64Var(&p.Credits, "credits", 0, "`N` credits to pay, required: the asset's price or listing (0 for a free asset)")
	fs.StringVar(&p.PurchaseID, "key", "", "purchase ID, the idempotency `KEY`: the same purchase sent again buys once (default: a new one, printed)")
	fs.DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the result (a `DURATION` such as 30s or 5m)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// purchase sends p, waits up to timeout for its result and prints it.
func (a *app) purchase(ctx context.Context, p ledger.PurchaseRequest, timeout time.Duration, asJSON bool) error {
	if p.BuyerID == "" && a.cfg.Server == "" {
		return usagef("--buyer is required: the account that pays (only a token bound to an account, through DAB_SERVER, buys without it)")
	}
	if p.PurchaseID == "" {
		p.PurchaseID = newKey("buy")
	}
	check := p
	if check.BuyerID == "" {
		check.BuyerID = "bound-token" // the server fills in the token's account
	}
	if err := check.Check(); err != nil {
		return usageError{err}
	}
	var get func(context.Context, string) (ledger.PurchaseResult, error)
	var res ledger.PurchaseResult
	if a.cfg.Server != "" {
		c, err := a.apiClient()
		if err != nil {
			return err
		}
		res, err = c.Purchase(ctx, p)
		var ae *apiclient.Error
		if errors.As(err, &ae) && ae.Code == "buyer_required" {
			return usagef("--buyer is required: DAB_TOKEN is not bound to an account, so name the account that pays")
		}
		if err != nil {
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
		res, err = (&market.Purchases{Ledger: led, Queue: client}).Submit(ctx, p)
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
			return fmt.Errorf("purchase %s is still pending after %s (is a worker running?); follow it with dab tasks show %s, or send it again with --key %s", p.PurchaseID, timeout, p.PurchaseID, p.PurchaseID)
		case <-time.After(100 * time.Millisecond):
		}
		var err error
		if res, err = get(ctx, p.PurchaseID); err != nil {
			return err
		}
	}
	if asJSON {
		if err := writeJSON(a, res); err != nil {
			return err
		}
	} else if res.Status == ledger.StatusSucceeded {
		outf(a.stdout, "purchase %s succeeded: %s paid %s to %s for asset %s (entry %s)\n", res.PurchaseID, res.BuyerID, plural(res.Credits, "credit", "credits"), res.Seller, res.AssetID, res.EntryID)
	} else {
		outf(a.stdout, "purchase %s rejected (%s): %s; nothing was charged\n", res.PurchaseID, res.Reason, res.Detail)
	}
	if res.Status == ledger.StatusRejected {
		return errRejected
	}
	return nil
}

func (c *cli) ledgerCmd() *cobra.Command {
	var asJSON, journal, force bool
	verify := &cobra.Command{
		Use:   "verify [--journal] [--json]",
		Short: "replay every entry and check the books; exit 1 on any mismatch",
		Long: `Replay every ledger entry and check balances, purchases, listings and each
asset's sales; exit 1 on any mismatch. With --journal also check Redis
against the journal of the books in the bucket.`,
		Example: `  dab ledger verify
  dab ledger verify --journal --json`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withLedger(cmd, args, func(a *app, rdb redis.UniversalClient) error {
				return a.ledgerVerify(cmd.Context(), rdb, journal, asJSON)
			})
		},
	}
	verify.Flags().BoolVar(&journal, "journal", false, "also check Redis against the journal in the bucket")
	verify.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	rebuild := &cobra.Command{
		Use:   "rebuild-sales",
		Short: "rebuild each asset's sales history from the entries",
		Long: `Rebuild each asset's sales history from the ledger's entries: once, for
ledgers written before dab kept it. Safe while purchases run; a second run
changes nothing.`,
		Example:           `  dab ledger rebuild-sales`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withLedger(cmd, args, func(a *app, rdb redis.UniversalClient) error {
				ids, err := a.ledger(rdb).RebuildSales(cmd.Context())
				if err != nil {
					return err
				}
				outf(a.stdout, "rebuilt the sales history of %s\n", plural(len(ids), "asset", "assets"))
				return nil
			})
		},
	}
	restore := &cobra.Command{
		Use:   "restore [--force] [--json]",
		Short: "rebuild the books in Redis from the bucket's journal",
		Long: `Rebuild the ledger in Redis from the journal in the bucket, after Redis lost
it. It refuses a ledger that has entries unless --force, and a forced
restore refuses while Redis holds entries the journal lacks.`,
		Example: `  dab ledger restore
  dab ledger verify --journal && dab ledger restore --force`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withLedger(cmd, args, func(a *app, rdb redis.UniversalClient) error {
				return a.ledgerRestore(cmd.Context(), rdb, force, asJSON)
			})
		},
	}
	restore.Flags().BoolVar(&force, "force", false, "delete the ledger in Redis first, even when it has entries")
	restore.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd := &cobra.Command{
		Use:   "ledger VERB",
		Short: "check the books, or rebuild them from the bucket's journal",
		Example: `  dab ledger verify
  dab ledger restore`,
	}
	cmd.AddCommand(verify, rebuild, restore)
	return cmd
}

// withLedger runs f with a connection to the local Redis: the ledger's
// verbs work on Redis directly (an operator's tools, no DAB_SERVER).
func (c *cli) withLedger(cmd *cobra.Command, args []string, f func(*app, redis.UniversalClient) error) error {
	a, err := c.app(args, roleClient)
	if err != nil {
		return err
	}
	rdb, err := a.connectRedis(cmd.Context())
	if err != nil {
		return err
	}
	defer rdb.Close()
	return f(a, rdb)
}

// ledgerVerify: dab ledger verify [--journal].
func (a *app) ledgerVerify(ctx context.Context, rdb redis.UniversalClient, journal, asJSON bool) error {
	if journal {
		if err := a.ledgerVerifyJournal(ctx, rdb, asJSON); err != nil {
			return err
		}
	}
	r, err := a.ledger(rdb).Verify(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		writeJSON(a, r)
	} else {
		outf(a.stdout, "%s, %s, %s issued, %s succeeded, %d rejected\n", plural(r.Entries, "entry", "entries"), plural(r.Accounts, "account", "accounts"),
			plural(r.Issued, "credit", "credits"), plural(r.Purchases, "purchase", "purchases"), r.Rejected)
		for _, p := range r.Problems {
			outln(a.stdout, "PROBLEM: "+p)
		}
	}
	if !r.OK() {
		return fmt.Errorf("ledger verify found %s", plural(len(r.Problems), "problem", "problems"))
	}
	if !asJSON {
		outln(a.stdout, "ok: every balance is the sum of its entries, none but issuance is negative, balances sum to zero, every purchase is applied once")
	}
	return nil
}

func (c *cli) listingCmd() *cobra.Command {
	var asJSON bool
	run := func(cmd *cobra.Command, args []string, set bool) error {
		id := args[0]
		var credits int64
		if set {
			var err error
			if credits, err = asset.ParsePrice(args[1]); err != nil {
				return usageError{err}
			}
		}
		if !asset.ValidID(id) {
			return usagef("%q is not an asset ID (20 hex digits): see dab assets list", id)
		}
		a, err := c.app(args, roleClient)
		if err != nil {
			return err
		}
		return a.listing(cmd.Context(), id, set, credits, asJSON)
	}
	set := &cobra.Command{
		Use:   "set ID CREDITS [--json]",
		Short: "put an owned asset up for sale for CREDITS (0: free)",
		Long: `Put an owned asset up for sale. Through DAB_SERVER only the owner's bound
token (or admin) may; locally (Redis) it acts as the operator, for whoever
owns the asset.`,
		Example:           `  dab listing set 0123456789abcdef0123 7`,
		Args:              exactArgs(2),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              func(cmd *cobra.Command, args []string) error { return run(cmd, args, true) },
	}
	set.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	remove := &cobra.Command{
		Use:               "remove ID [--json]",
		Short:             "take an asset off sale",
		Example:           `  dab listing remove 0123456789abcdef0123`,
		Args:              exactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              func(cmd *cobra.Command, args []string) error { return run(cmd, args, false) },
	}
	remove.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd := &cobra.Command{
		Use:   "listing VERB",
		Short: "sell an owned asset, or take it off sale",
		Example: `  dab listing set 0123456789abcdef0123 7
  dab listing remove 0123456789abcdef0123`,
	}
	cmd.AddCommand(set, remove)
	return cmd
}

// listing sets (set) or removes the listing of asset id. Through
// DAB_SERVER it acts as the token's account (the owner's bound token, or
// admin); locally (Redis) as the operator, for whoever owns the asset.
func (a *app) listing(ctx context.Context, id string, set bool, credits int64, asJSON bool) error {
	var offer ledger.Offer
	if a.cfg.Server != "" {
		c, err := a.apiClient()
		if err != nil {
			return err
		}
		if set {
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
		if set {
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
	if !set {
		outf(a.stdout, "asset %s is not listed: not for sale\n", id)
	} else {
		outf(a.stdout, "asset %s is listed by %s for %s\n", id, offer.Seller, plural(credits, "credit", "credits"))
	}
	return nil
}
