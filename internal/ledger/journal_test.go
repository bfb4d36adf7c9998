package ledger_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

func journalKeys(t *testing.T, st *storage.Store) []string {
	t.Helper()
	var keys []string
	if err := st.ListKeys(context.Background(), "journal/", func(k string) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestJournalRestore: grants, purchases, a price and a listing are
// journaled to a real bucket; Redis loses the ledger; restore brings back
// balances, owners and listings that Verify accepts.
func TestJournalRestore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	st := storagetest.Store(t, harness.StartS3(t))
	j := &ledger.Journal{Store: b.led, Objects: st, Batch: 3}

	a1 := b.newAsset(t, "one.png", "10")
	a2 := b.newAsset(t, "two.png", "")
	b.grant(t, "alice", 100)
	b.grant(t, "bob", 50)
	if _, err := b.led.SetPrice(ctx, a2, 7, "admin"); err != nil {
		t.Fatal(err)
	}
	buy := func(id, asset, buyer string, n int64) {
		t.Helper()
		r, err := b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: id, AssetID: asset, BuyerID: buyer, Credits: n})
		if err != nil || r.Status != ledger.StatusSucceeded {
			t.Fatalf("purchase %s: %+v %v", id, r, err)
		}
	}
	buy("p1", a1, "alice", 10)
	buy("p2", a2, "bob", 7)
	if _, err := b.led.SetListing(ctx, a1, "alice", 20, "alice"); err != nil {
		t.Fatal(err)
	}
	// Half journaled, then more entries, then the rest.
	if n, err := j.Step(ctx); err != nil || n != 3 {
		t.Fatalf("step: %d %v", n, err)
	}
	buy("p3", a1, "bob", 20)
	if _, err := b.led.SetListing(ctx, a2, "bob", 5, "bob"); err != nil {
		t.Fatal(err)
	}
	n, err := j.Run(ctx, time.Minute)
	if err != nil || n != 5 {
		t.Fatalf("run: %d %v", n, err)
	}
	keys := journalKeys(t, st)
	if len(keys) != 3 {
		t.Fatalf("journal objects: %v", keys)
	}
	// Running again writes nothing.
	if n, err := j.Run(ctx, time.Minute); err != nil || n != 0 {
		t.Fatalf("second run: %d %v", n, err)
	}
	if k := journalKeys(t, st); len(k) != 3 {
		t.Fatalf("second run wrote objects: %v", k)
	}
	// A crash after an object was stored and before the position moved:
	// the next run moves past it without a duplicate.
	b.grant(t, "carol", 5)
	if _, err := j.Step(ctx); err != nil {
		t.Fatal(err)
	}
	pos, _ := j.Position(ctx)
	if err := b.rdb.Set(ctx, b.led.Keys().JournalPos(), "0-0", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Run(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if p2, _ := j.Position(ctx); p2 != pos {
		t.Fatalf("position after re-run %s, want %s", p2, pos)
	}
	if k := journalKeys(t, st); len(k) != 4 {
		t.Fatalf("objects after re-run: %v", k)
	}
	jr, err := b.led.VerifyJournal(ctx, st, "")
	if err != nil || !jr.OK() || jr.Journaled != 9 || jr.Behind != 0 {
		t.Fatalf("verify journal: %+v %v", jr, err)
	}
	b.grant(t, "dave", 1)
	if jr, _ = b.led.VerifyJournal(ctx, st, ""); !jr.OK() || jr.Behind != 1 {
		t.Fatalf("verify journal behind: %+v", jr)
	}
	if _, err := j.Run(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}

	before := map[string]int64{}
	for _, acct := range []string{"alice", "bob", "carol", "dave", "house", ledger.Issuance} {
		before[acct] = b.balance(t, acct)
	}
	rec1, _ := b.assets.Get(ctx, a1)
	rec2, _ := b.assets.Get(ctx, a2)
	sales, _ := b.led.Sales(ctx, a1)
	want := b.verify(t)

	// Restore refuses a ledger with entries.
	if _, err := b.led.Restore(ctx, st, "", false); !errors.Is(err, ledger.ErrLedgerNotEmpty) {
		t.Fatalf("restore into a full ledger: %v", err)
	}

	// Redis is lost; the records come back (dab reconcile), without owners.
	if err := b.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	b.newAsset(t, "one.png", "10")
	b.newAsset(t, "two.png", "")
	res, err := b.led.Restore(ctx, st, "", false)
	if err != nil || res.Entries != 10 || len(res.MissingAssets) != 0 {
		t.Fatalf("restore: %+v %v", res, err)
	}
	got := b.verify(t)
	if got.Entries != want.Entries || got.Purchases != want.Purchases || got.Issued != want.Issued || got.Listings != want.Listings || got.Prices != want.Prices {
		t.Fatalf("verify after restore %+v, before %+v", got, want)
	}
	for acct, bal := range before {
		if g := b.balance(t, acct); g != bal {
			t.Errorf("%s: balance %d after restore, %d before", acct, g, bal)
		}
	}
	r1, _ := b.assets.Get(ctx, a1)
	r2, _ := b.assets.Get(ctx, a2)
	if r1.Owner != rec1.Owner || r2.Owner != rec2.Owner || r1.Owner != "bob" {
		t.Fatalf("owners after restore %q %q, before %q %q", r1.Owner, r2.Owner, rec1.Owner, rec2.Owner)
	}
	if s2, _ := b.led.Sales(ctx, a1); len(s2) != len(sales) || s2[1].PurchaseID != "p3" {
		t.Fatalf("sales after restore %+v, before %+v", s2, sales)
	}
	p, err := b.led.GetPurchase(ctx, "p2")
	if err != nil || p.Status != ledger.StatusSucceeded || p.Seller != "house" {
		t.Fatalf("purchase p2 after restore: %+v %v", p, err)
	}
	// A retried grant is still idempotent.
	if g, err := b.led.Grant(ctx, "g-alice100", "alice", 100); err != nil || g.Balance != before["alice"] {
		t.Fatalf("grant retried after restore: %+v %v", g, err)
	}
	if jr, err := b.led.VerifyJournal(ctx, st, ""); err != nil || !jr.OK() || jr.Behind != 0 {
		t.Fatalf("verify journal after restore: %+v %v", jr, err)
	}
	// The writer goes on after the restored position: nothing is written again.
	if n, err := j.Run(ctx, time.Minute); err != nil || n != 0 {
		t.Fatalf("run after restore: %d %v", n, err)
	}
	// Forced restore over the ledger gives the same books.
	if res, err := b.led.Restore(ctx, st, "", true); err != nil || res.Entries != 10 {
		t.Fatalf("forced restore: %+v %v", res, err)
	}
	b.verify(t)
	if g := b.balance(t, "bob"); g != before["bob"] {
		t.Fatalf("bob after forced restore: %d, want %d", g, before["bob"])
	}
	// A forced restore would delete an entry the journal does not have
	// yet: refused, the entry kept; once journaled, the restore goes on.
	b.grant(t, "erin", 3)
	if _, err := b.led.Restore(ctx, st, "", true); !errors.Is(err, ledger.ErrNotJournaled) {
		t.Fatalf("forced restore over an entry not journaled: %v", err)
	}
	if g := b.balance(t, "erin"); g != 3 {
		t.Fatalf("erin after a refused restore: %d, want 3", g)
	}
	if _, err := j.Run(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if res, err := b.led.Restore(ctx, st, "", true); err != nil || res.Entries != 11 {
		t.Fatalf("forced restore after journaling: %+v %v", res, err)
	}
	if g := b.balance(t, "erin"); g != 3 {
		t.Fatalf("erin after the forced restore: %d, want 3", g)
	}
}

// TestJournalRestoreMissingRecord: an entry's asset whose record is gone is
// reported, not invented.
func TestJournalRestoreMissingRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	st := storagetest.Store(t, harness.StartS3(t))
	a := b.newAsset(t, "x.png", "3")
	b.grant(t, "alice", 10)
	if _, err := b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: "p", AssetID: a, BuyerID: "alice", Credits: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := (&ledger.Journal{Store: b.led, Objects: st}).Run(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := b.led.Restore(ctx, st, "", false)
	if err != nil || len(res.MissingAssets) != 1 || res.MissingAssets[0] != a {
		t.Fatalf("restore: %+v %v", res, err)
	}
	if strings.Join(res.MissingAssets, ",") != a {
		t.Fatal(res.MissingAssets)
	}
}
