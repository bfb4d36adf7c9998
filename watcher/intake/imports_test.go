package intake

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/api"
)

// TestImportsQueueOncePerKey: a request is checked at the edge, queued
// once per idempotency key; the same request again is a replay, another
// request under the same key a conflict.
func TestImportsQueueOncePerKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	im := &Imports{Queue: b.client, Tasks: b.insp}
	ctx := context.Background()
	req := api.ImportRequest{Key: "k-1", Source: "https://example.com/a.png", Type: "generic", Path: "web/a.png", Metadata: map[string]string{"price": "3"}}
	id, replayed, err := im.Import(ctx, req)
	if err != nil || replayed || id == "" {
		t.Fatalf("first import: %q %v %v", id, replayed, err)
	}
	if id2, replayed, err := im.Import(ctx, req); err != nil || !replayed || id2 != id {
		t.Fatalf("the same import again: %q %v %v", id2, replayed, err)
	}
	other := req
	other.Path = "web/b.png"
	if _, _, err := im.Import(ctx, other); !errors.Is(err, api.ErrImportConflict) {
		t.Fatalf("another import under the key: %v", err)
	}
	for _, tc := range []struct {
		name string
		req  api.ImportRequest
		want string
	}{
		{"no source", api.ImportRequest{Type: "generic", Path: "x.png"}, "source"},
		{"file source", api.ImportRequest{Source: "file:///etc/passwd", Type: "generic", Path: "x.png"}, "source"},
		{"s3 without key", api.ImportRequest{Source: "s3://bucket", Type: "generic", Path: "x.png"}, "s3://bucket/key"},
		{"path escapes", api.ImportRequest{Source: "https://example.com/x", Type: "generic", Path: "../x.png"}, ".."},
		{"bad sha", api.ImportRequest{Source: "https://example.com/x", Type: "generic", Path: "x.png", SHA256: "ABC"}, "sha256"},
		{"bad price", api.ImportRequest{Source: "https://example.com/x", Type: "generic", Path: "x.png", Metadata: map[string]string{"price": "1.5"}}, "price"},
		{"reserved metadata", api.ImportRequest{Source: "https://example.com/x", Type: "generic", Path: "x.png", Metadata: map[string]string{"owner": "me"}}, "owner"},
		{"metadata too large", api.ImportRequest{Source: "https://example.com/x", Type: "generic", Path: "x.png", Metadata: map[string]string{"note": strings.Repeat("x", 3000)}}, "metadata"},
	} {
		tc.req.Key = "bad-" + tc.name
		if _, _, err := im.Import(ctx, tc.req); !errors.Is(err, api.ErrBadImport) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a bad import naming %q", tc.name, err, tc.want)
		}
	}
}
