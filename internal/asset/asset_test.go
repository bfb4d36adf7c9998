package asset_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
)

func newStore(t *testing.T) *asset.Store {
	t.Helper()
	r := harness.Redis(t)
	return asset.NewStore(harness.RedisClient(t, r), "test:")
}

func rec(key, sha string) asset.Record {
	return asset.Record{
		Name: key, Type: "cyoa", Path: key, S3Bucket: "b", S3Key: "cyoa/" + key, Size: 3, SHA256: sha,
		ContentType: "image/png", Metadata: map[string]string{"graph_role": "node"}, SpoolID: "s-" + key,
	}
}

func TestPutIsIdempotent(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	r1, created, err := st.Put(ctx, rec("NODE_a.png", "aaa"))
	if err != nil || !created {
		t.Fatalf("first put = %v, %v", created, err)
	}
	// Concurrent re-runs of the same task: exactly one record.
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, created, err := st.Put(ctx, rec("NODE_a.png", "aaa"))
			if err != nil || created || r.ID != r1.ID || !r.CreatedAt.Equal(r1.CreatedAt) {
				t.Errorf("re-put = %+v, %v, %v", r, created, err)
			}
		}()
	}
	wg.Wait()
	if n, _ := st.Count(ctx, ""); n != 1 {
		t.Fatalf("count = %d, want 1", n)
	}
	got, err := st.Get(ctx, r1.ID)
	if err != nil || got.Metadata["graph_role"] != "node" || got.Size != 3 || got.S3Key != "cyoa/NODE_a.png" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if id, err := st.BySpool(ctx, "s-NODE_a.png"); err != nil || id != r1.ID {
		t.Fatalf("BySpool = %q, %v", id, err)
	}
	if _, _, err := st.Put(ctx, rec("NODE_a.png", "bbb")); !errors.Is(err, asset.ErrConflict) {
		t.Fatalf("conflicting put err = %v", err)
	}
	if _, err := st.Get(ctx, "0123456789abcdef0123"); !errors.Is(err, asset.ErrNotFound) {
		t.Fatalf("missing get err = %v", err)
	}
	if _, err := st.Get(ctx, "../x"); !errors.Is(err, asset.ErrNotFound) {
		t.Fatalf("bad id err = %v", err)
	}
}

func TestListPaginates(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	// Many records share a millisecond: the cursor must still neither skip nor repeat.
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	want := map[string]bool{}
	for i := range 95 {
		r := rec(fmt.Sprintf("NODE_%d.png", i), "s")
		if i%2 == 0 {
			r.Type = "generic"
			r.S3Key = "generic/" + r.Path
		}
		r.CreatedAt = at.Add(time.Duration(i/10) * time.Millisecond)
		got, _, err := st.Put(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		want[got.ID] = true
	}
	tests := []struct {
		typ   string
		limit int
		total int
	}{{"", 10, 95}, {"", 7, 95}, {"generic", 10, 48}, {"cyoa", 50, 47}, {"none", 10, 0}}
	for _, tt := range tests {
		seen := map[string]bool{}
		var last time.Time
		cursor := ""
		for pages := 0; ; pages++ {
			p, err := st.List(ctx, asset.ListOptions{Type: tt.typ, Limit: tt.limit, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Records {
				if seen[r.ID] || !want[r.ID] || (tt.typ != "" && r.Type != tt.typ) {
					t.Fatalf("type %q: repeated or foreign record %s", tt.typ, r.ID)
				}
				if !last.IsZero() && r.CreatedAt.After(last) {
					t.Fatalf("not newest first")
				}
				seen[r.ID], last = true, r.CreatedAt
			}
			if p.Next == "" {
				break
			}
			cursor = p.Next
			if pages > 100 {
				t.Fatal("no end")
			}
		}
		if len(seen) != tt.total {
			t.Fatalf("type %q limit %d: saw %d records, want %d", tt.typ, tt.limit, len(seen), tt.total)
		}
	}
	if _, err := st.List(ctx, asset.ListOptions{Cursor: "garbage"}); !errors.Is(err, asset.ErrBadCursor) {
		t.Fatalf("bad cursor err = %v", err)
	}
}
