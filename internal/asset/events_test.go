package asset_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/harness"
)

// TestRecordWritesItsEventOnce: a new record appends one asset.recorded
// event whose data is the record exactly as Get (and so the API) shows it;
// re-runs of the same put, concurrent or not, append none, and neither
// does a conflicting put.
func TestRecordWritesItsEventOnce(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	st := asset.NewStore(rdb, "test:")
	ctx := context.Background()
	r := rec("NODE_<b>.png", "aaa")
	r.Metadata["price"] = "12"
	r.CreatedAt = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))
	first, created, err := st.Put(ctx, r)
	if err != nil || !created {
		t.Fatalf("put: %v %v", created, err)
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, created, err := st.Put(ctx, r); err != nil || created {
				t.Errorf("re-put: %v %v", created, err)
			}
		}()
	}
	wg.Wait()
	if _, _, err := st.Put(ctx, rec("NODE_<b>.png", "other")); !errors.Is(err, asset.ErrConflict) {
		t.Fatalf("conflicting put: %v", err)
	}
	msgs, err := rdb.XRange(ctx, event.Keys{Prefix: "test:"}.Stream(), "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d events (%v), want 1", len(msgs), err)
	}
	e, accounts, err := event.FromMessage(msgs[0])
	if err != nil || e.Type != event.TypeAssetRecorded || len(accounts) != 0 {
		t.Fatalf("event %+v about %v: %v", e, accounts, err)
	}
	got, err := st.Get(ctx, first.ID)
	if err != nil {
		t.Fatal(err)
	}
	shown, _ := event.Marshal(got)
	if !bytes.Equal(e.Data, shown) {
		t.Fatalf("event data\n%s\nis not the record as shown\n%s", e.Data, shown)
	}
	var back asset.Record
	if err := json.Unmarshal(e.Data, &back); err != nil || back.ID != first.ID || *back.Price != 12 || back.Name != "NODE_<b>.png" {
		t.Fatalf("event data reads back as %+v: %v", back, err)
	}
}
