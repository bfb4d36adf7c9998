package ledger_test

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/ledger"
)

// events reads every event of the stream, oldest first, with the accounts
// each is about.
func (b *bundle) events(t *testing.T) ([]event.Event, [][]string) {
	t.Helper()
	msgs, err := b.rdb.XRange(context.Background(), event.Keys{Prefix: "dab:"}.Stream(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var evs []event.Event
	var accts [][]string
	for _, m := range msgs {
		e, a, err := event.FromMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		evs, accts = append(evs, e), append(accts, a)
	}
	return evs, accts
}

// TestLedgerChangesWriteOneEventEach: every grant, purchase (succeeded or
// rejected), price and listing change appends exactly one event, with the
// change, in the same script; a repeat (the same grant key or purchase ID,
// the same price again) appends none, and neither does a refused change
// that stores nothing (a conflict, an owned asset's price).
func TestLedgerChangesWriteOneEventEach(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type want struct {
		typ      string
		accounts []string
		data     map[string]any
	}
	tests := []struct {
		name string
		// run makes the change (twice where a repeat must write nothing)
		// and returns what events it must have written.
		run func(t *testing.T, b *bundle, assetID string) []want
	}{
		{"grant, then the same grant again", func(t *testing.T, b *bundle, _ string) []want {
			for range 3 {
				if _, err := b.led.Grant(ctx, "grant-1", "alice", 123_456_789_012_345); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := b.led.Grant(ctx, "grant-1", "alice", 5); err == nil {
				t.Fatal("a conflicting grant was accepted")
			}
			return []want{{event.TypeCreditsGranted, []string{"alice"}, map[string]any{"account": "alice", "credits": json.Number("123456789012345"), "grant_key": "grant-1"}}}
		}},
		{"purchase succeeded, applied again", func(t *testing.T, b *bundle, assetID string) []want {
			b.grant(t, "bob", 10)
			req := ledger.PurchaseRequest{PurchaseID: "p-1", AssetID: assetID, BuyerID: "bob", Credits: 7}
			for range 3 {
				if r, err := b.led.Apply(ctx, req); err != nil || r.Status != ledger.StatusSucceeded {
					t.Fatalf("apply: %+v %v", r, err)
				}
			}
			return []want{
				{event.TypeCreditsGranted, []string{"bob"}, map[string]any{"account": "bob", "credits": json.Number("10")}},
				{event.TypePurchaseSucceeded, []string{"bob", "house"}, map[string]any{"purchase_id": "p-1", "asset_id": assetID, "buyer": "bob", "seller": "house", "credits": json.Number("7")}},
			}
		}},
		{"purchase rejected, applied again", func(t *testing.T, b *bundle, assetID string) []want {
			req := ledger.PurchaseRequest{PurchaseID: "p-2", AssetID: assetID, BuyerID: "carol", Credits: 7}
			for range 3 {
				if r, err := b.led.Apply(ctx, req); err != nil || r.Reason != ledger.ReasonInsufficientCredits {
					t.Fatalf("apply: %+v %v", r, err)
				}
			}
			return []want{{event.TypePurchaseRejected, []string{"carol"}, map[string]any{"purchase_id": "p-2", "buyer": "carol", "reason": ledger.ReasonInsufficientCredits,
				"detail": "carol has 0 credits, the purchase needs 7", "credits": json.Number("7")}}}
		}},
		{"price set, set again, cleared, cleared again", func(t *testing.T, b *bundle, assetID string) []want {
			for _, n := range []int64{9, 9} {
				if _, err := b.led.SetPrice(ctx, assetID, n, "admin token"); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 {
				if _, err := b.led.ClearPrice(ctx, assetID, "admin token"); err != nil {
					t.Fatal(err)
				}
			}
			return []want{
				{event.TypePriceChanged, []string{"house"}, map[string]any{"asset_id": assetID, "action": "set", "credits": json.Number("9"), "seller": "house", "by": "admin token"}},
				{event.TypePriceChanged, []string{"house"}, map[string]any{"asset_id": assetID, "action": "clear", "credits": nil}},
			}
		}},
		{"listing set, set again, removed, removed again; price of an owned asset refused", func(t *testing.T, b *bundle, assetID string) []want {
			b.grant(t, "dave", 7)
			if _, err := b.led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: "p-3", AssetID: assetID, BuyerID: "dave", Credits: 7}); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if _, err := b.led.SetListing(ctx, assetID, "dave", 0, "dave"); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 {
				if _, err := b.led.ClearListing(ctx, assetID, "dave", "dave"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := b.led.SetListing(ctx, assetID, "erin", 5, "erin"); err == nil {
				t.Fatal("another account listed dave's asset")
			}
			if _, err := b.led.SetPrice(ctx, assetID, 5, "admin token"); err == nil {
				t.Fatal("an owned asset was priced")
			}
			return []want{
				{event.TypeCreditsGranted, []string{"dave"}, nil},
				{event.TypePurchaseSucceeded, []string{"dave", "house"}, nil},
				{event.TypeListingChanged, []string{"dave"}, map[string]any{"asset_id": assetID, "action": "set", "credits": json.Number("0"), "owner": "dave", "by": "dave"}},
				{event.TypeListingChanged, []string{"dave"}, map[string]any{"action": "clear", "credits": nil}},
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			assetID := b.newAsset(t, "a", "7")
			before, _ := b.events(t) // the asset's own asset.recorded
			wants := tt.run(t, b, assetID)
			evs, accts := b.events(t)
			evs, accts = evs[len(before):], accts[len(before):]
			if len(evs) != len(wants) {
				t.Fatalf("%d events, want %d: %+v", len(evs), len(wants), evs)
			}
			for i, w := range wants {
				e := evs[i]
				if e.Type != w.typ || !reflect.DeepEqual(accts[i], w.accounts) || e.Time.IsZero() || !event.ValidID(e.ID) {
					t.Errorf("event %d = %s about %v at %s, want %s about %v", i, e.Type, accts[i], e.Time, w.typ, w.accounts)
				}
				d := json.NewDecoder(bytes.NewReader(e.Data))
				d.UseNumber()
				var got map[string]any
				if err := d.Decode(&got); err != nil {
					t.Fatalf("event %d data %s: %v", i, e.Data, err)
				}
				for k, v := range w.data {
					if !reflect.DeepEqual(got[k], v) {
						t.Errorf("event %d (%s) data[%s] = %#v, want %#v (all: %s)", i, e.Type, k, got[k], v, e.Data)
					}
				}
				if _, ok := got["balance"]; ok {
					t.Errorf("event %d carries a balance: %s", i, e.Data)
				}
			}
			b.verify(t)
		})
	}
}
