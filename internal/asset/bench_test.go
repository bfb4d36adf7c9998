package asset_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
)

// BenchmarkListMillion shows that a page costs the same at the start and at
// the end of a large index. DAB_BENCH_RECORDS sets the number of records
// (default 1,000,000; seeding takes a few seconds per 100,000).
//
//	go test ./internal/asset -run '^$' -bench ListMillion -benchtime 2000x
func BenchmarkListMillion(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("DAB_BENCH_RECORDS")); err == nil && v > 0 {
		n = v
	}
	r := harness.Redis(b)
	rdb := harness.RedisClient(b, r)
	st := asset.NewStore(rdb, "bench:")
	ctx := context.Background()
	// Seed through the real script, pipelined, so the data is what Put writes.
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const batch = 1000
	for i := 0; i < n; i += batch {
		errs := make(chan error, batch)
		for j := i; j < min(i+batch, n); j++ {
			go func() {
				_, _, err := st.Put(ctx, asset.Record{
					Name: "f", Type: []string{"cyoa", "generic"}[j%2], Path: fmt.Sprint(j), S3Bucket: "b",
					S3Key: fmt.Sprintf("k/%d", j), SHA256: "s", CreatedAt: base.Add(time.Duration(j) * time.Millisecond),
				})
				errs <- err
			}()
		}
		for j := i; j < min(i+batch, n); j++ {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
	}
	// A cursor near the oldest end of the index: record 10 of n.
	oldest, err := st.Get(ctx, asset.ID("b", "k/10"))
	if err != nil {
		b.Fatal(err)
	}
	cursor := asset.CursorAfter(oldest)
	for _, bc := range []struct {
		name string
		opts asset.ListOptions
	}{
		{"first-page", asset.ListOptions{Limit: 50}},
		{"first-page-by-type", asset.ListOptions{Limit: 50, Type: "cyoa"}},
		{"page-near-oldest", asset.ListOptions{Limit: 50, Cursor: cursor}},
	} {
		b.Run(fmt.Sprintf("%s/records=%d", bc.name, n), func(b *testing.B) {
			for b.Loop() {
				if _, err := st.List(ctx, bc.opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
