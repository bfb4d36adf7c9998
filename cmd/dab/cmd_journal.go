package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/redact"
	"github.com/dab-assets/dab/internal/storage"
)

// journalPrefix is where the books go in the bucket: journal/<key prefix>/
// (so that dabs with different DAB_KEY_PREFIX can share a bucket).
func (a *app) journalPrefix() string {
	p := strings.Trim(strings.NewReplacer(":", "", "{", "", "}", "").Replace(a.cfg.KeyPrefix), "/")
	if p == "" {
		return ledger.DefaultJournalPrefix
	}
	return ledger.DefaultJournalPrefix + p + "/"
}

// journal is the ledger's journal writer on rdb and st.
func (a *app) journal(rdb redis.UniversalClient, st *storage.Store) *ledger.Journal {
	return &ledger.Journal{Store: a.ledger(rdb), Objects: st, Prefix: a.journalPrefix()}
}

// runJournal copies new ledger entries to the bucket every
// DAB_JOURNAL_INTERVAL until ctx ends. Every worker runs it; a lock in
// Redis (SET NX PX) lets one of them write at a time.
func (a *app) runJournal(ctx context.Context, rdb redis.UniversalClient, st *storage.Store) {
	j := a.journal(rdb, st)
	lease := 3*a.cfg.JournalInterval + 30*time.Second
	t := time.NewTicker(a.cfg.JournalInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// One last copy, so that a clean stop leaves nothing behind.
			c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = j.Run(c, lease)
			cancel()
			return
		case <-t.C:
			n, err := j.Run(ctx, lease)
			if n > 0 {
				a.log.Debug("ledger.journaled", "entries", n)
			}
			if err != nil && ctx.Err() == nil {
				a.log.Warn("ledger.journal_failed", "error", redact.Error(err, a.cfg.RedisURL, a.cfg.S3.Endpoint).Error(),
					"note", "the entries stay in Redis and are copied at the next interval")
			}
		}
	}
}

// ledgerRestore: dab ledger restore [--force].
func (a *app) ledgerRestore(ctx context.Context, rdb redis.UniversalClient, force, asJSON bool) error {
	st, err := a.storage(ctx)
	if err != nil {
		return err
	}
	res, err := a.ledger(rdb).Restore(ctx, st, a.journalPrefix(), force)
	if errors.Is(err, ledger.ErrLedgerNotEmpty) {
		return fmt.Errorf("%w: dab ledger restore rebuilds an empty ledger; check it with dab ledger verify --journal, or use --force to delete the ledger in Redis and restore it from the journal", err)
	}
	if err != nil {
		return err
	}
	if asJSON {
		writeJSON(a, res)
	} else {
		outf(a.stdout, "restored %s from s3://%s/%s: %s, %s, %s and %s; last entry %s\n",
			plural(res.Entries, "entry", "entries"), st.Bucket(), a.journalPrefix(), plural(res.Grants, "grant", "grants"), plural(res.Purchases, "purchase", "purchases"),
			plural(res.Prices, "price change", "price changes"), plural(res.Listings, "listing change", "listing changes"), res.LastID)
		for _, id := range res.MissingAssets {
			outf(a.stdout, "PROBLEM: asset %s has no record in Redis: its owner, price and listing were not set\n", id)
		}
	}
	if len(res.MissingAssets) > 0 {
		return fmt.Errorf("%s named in the ledger without a record: run dab reconcile, then dab ledger restore --force", plural(len(res.MissingAssets), "asset", "assets"))
	}
	return nil
}

// ledgerVerifyJournal: the --journal part of dab ledger verify.
func (a *app) ledgerVerifyJournal(ctx context.Context, rdb redis.UniversalClient, asJSON bool) error {
	st, err := a.storage(ctx)
	if err != nil {
		return err
	}
	r, err := a.ledger(rdb).VerifyJournal(ctx, st, a.journalPrefix())
	if err != nil {
		return err
	}
	if asJSON {
		writeJSON(a, r)
	} else {
		outf(a.stdout, "journal: %s in s3://%s/%s", plural(r.Journaled, "entry", "entries"), st.Bucket(), a.journalPrefix())
		if r.Behind > 0 {
			outf(a.stdout, "; Redis is ahead of it by %s (not journaled yet)", plural(r.Behind, "entry", "entries"))
		}
		fmt.Fprintln(a.stdout)
		for _, p := range r.Problems {
			outln(a.stdout, "PROBLEM: "+p)
		}
	}
	if !r.OK() {
		return fmt.Errorf("ledger verify --journal found %s", plural(len(r.Problems), "problem", "problems"))
	}
	return nil
}
