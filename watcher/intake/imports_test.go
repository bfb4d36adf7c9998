package intake

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/worker/task"
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
		{"s3 bad bucket name", api.ImportRequest{Source: "s3://Bad_Bucket/a.png", Type: "generic", Path: "x.png"}, "bucket name"},
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

// TestImportsRefuseUnlistedBuckets: an s3:// source must be in the listed
// buckets and never dab's own (its assets and journal), whatever "*" says;
// refused at the edge with the setting to change, nothing queued.
func TestImportsRefuseUnlistedBuckets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		sources task.S3Sources
		source  string
		want    string // "" = queued
	}{
		{"listed", task.S3Sources{Buckets: []string{"partner"}, Own: "dab"}, "s3://partner/a.png", ""},
		{"any", task.S3Sources{Buckets: []string{"*"}, Own: "dab"}, "s3://anything/a.png", ""},
		{"no list", task.S3Sources{Own: "dab"}, "s3://partner/a.png", "DAB_IMPORT_S3_BUCKETS"},
		{"not listed", task.S3Sources{Buckets: []string{"partner"}, Own: "dab"}, "s3://payroll/2026.csv", "DAB_IMPORT_S3_BUCKETS"},
		{"own bucket", task.S3Sources{Buckets: []string{"*"}, Own: "dab"}, "s3://dab/journal/dab/0001.json", "own bucket"},
		{"own bucket listed", task.S3Sources{Buckets: []string{"dab"}, Own: "dab"}, "s3://dab/generic/alice.png", "own bucket"},
		{"urls pass to the guard", task.S3Sources{Own: "dab"}, "https://example.com/a.png", ""},
	} {
		im := &Imports{Queue: b.client, Tasks: b.insp, Sources: tc.sources}
		id, _, err := im.Import(ctx, api.ImportRequest{Key: "src-" + tc.name, Source: tc.source, Type: "generic", Path: "x/" + strings.ReplaceAll(tc.name, " ", "-") + ".png"})
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v, want queued", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, api.ErrImportRefused) || !strings.Contains(err.Error(), tc.want) ||
			strings.Count(err.Error(), "import source refused") != 1 {
			t.Errorf("%s: %v, want refused once, naming %q", tc.name, err, tc.want)
		}
		if _, ierr := b.insp.GetTaskInfo(task.QueueImports, task.ImportTaskID("src-"+tc.name)); ierr == nil || id != "" {
			t.Errorf("%s: refused but queued", tc.name)
		}
	}
}

// TestImportsOverHTTP: POST /v1/imports answers 202 and a status URL, 200
// for a replay, 409 for another request under the key, 400 for a bad
// request, 403 for a source dab may not read and for a token without the
// ingest scope.
func TestImportsOverHTTP(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{})
	post := func(token, key, body string) answer {
		return h.do(t, "POST", "/v1/imports", token, strings.NewReader(body), map[string]string{"Content-Type": "application/json", "Idempotency-Key": key})
	}
	ok := `{"source": "s3://partner/a.png", "type": "generic", "path": "p/a.png"}`
	for _, tc := range []struct {
		token, key, body string
		status           int
		code             string
	}{
		{testIngest, "i-1", ok, 202, ""},
		{testIngest, "i-1", ok, 200, ""},
		{testIngest, "i-1", `{"source": "s3://partner/b.png", "type": "generic", "path": "p/b.png"}`, 409, "idempotency_conflict"},
		{testReader, "i-2", ok, 403, "forbidden"},
		{testBuyer, "i-2", ok, 403, "forbidden"},
		{testIngest, "i-3", `{"source": "s3://payroll/2026.csv", "type": "generic", "path": "p/c.csv"}`, 403, "import_source_refused"},
		{testIngest, "i-4", `{"source": "s3://` + h.bucket + `/journal/x.json", "type": "generic", "path": "p/d.json"}`, 403, "import_source_refused"},
		{testIngest, "i-5", `{"source": "s3://partner/a.png", "type": "generic", "path": "../a.png"}`, 400, "bad_import"},
		{testIngest, "", ok, 400, "idempotency_key_required"},
	} {
		a := post(tc.token, tc.key, tc.body)
		if a.Status != tc.status || a.ErrorCode() != tc.code {
			t.Errorf("%s %s: %d %s, want %d %s", tc.key, tc.body, a.Status, a.Body, tc.status, tc.code)
		}
	}
}

// TestImportsRefuseDotSegmentsInS3Keys: an s3:// key with "." or ".."
// segments means another object on the stores that resolve them (versitygw
// and other file-backed stores climb out of the bucket with them, or
// answer a bare 400 that the worker reports as "dab's credentials must be
// able to read the source bucket"), and a literal key on AWS. It is refused
// at the edge as a bad import naming the segment, as asset paths are,
// and nothing is queued.
func TestImportsRefuseDotSegmentsInS3Keys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	im := &Imports{Queue: b.client, Tasks: b.insp, Sources: task.S3Sources{Buckets: []string{"*"}, Own: "dab"}}
	for i, src := range []string{
		"s3://partner/../dab/journal/dab/0001.json",
		"s3://partner/x/../../dab/generic/alice.png",
		"s3://partner/./../dab/generic/alice.png",
		"s3://partner/covers/..",
		"s3://partner/a/./b.png",
	} {
		key := fmt.Sprintf("dots-%d", i)
		_, _, err := im.Import(ctx, api.ImportRequest{Key: key, Source: src, Type: "generic", Path: fmt.Sprintf("x/dots-%d.png", i)})
		if !errors.Is(err, api.ErrBadImport) || !strings.Contains(err.Error(), ".") {
			t.Errorf("%s: %v, want a bad import naming the dot segment", src, err)
		}
		if _, ierr := b.insp.GetTaskInfo(task.QueueImports, task.ImportTaskID(key)); ierr == nil {
			t.Errorf("%s: queued", src)
		}
	}
}

// TestImportsRefuseBadURLsAtTheEdge: an https:// source the worker's guard
// can only refuse (a user name and password in it, no host, a host that
// does not parse) is a 400 at the edge, not a 202 and an archived task
// later: and a password in a URL is never queued into the task payload
// (Redis), which the guard's own rule exists to prevent.
func TestImportsRefuseBadURLsAtTheEdge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	im := &Imports{Queue: b.client, Tasks: b.insp, Sources: task.S3Sources{Own: "dab"}}
	for i, src := range []string{
		"https://user:hunter2@example.com/a.png",
		"https://:hunter2@example.com/a.png",
		"https://",
		"https:///a.png",
		"https://exa mple.com/a.png",
	} {
		key := fmt.Sprintf("url-%d", i)
		_, _, err := im.Import(ctx, api.ImportRequest{Key: key, Source: src, Type: "generic", Path: fmt.Sprintf("x/url-%d.png", i)})
		if !errors.Is(err, api.ErrBadImport) {
			t.Errorf("%s: %v, want a bad import", src, err)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the password: %v", src, err)
		}
		if info, ierr := b.insp.GetTaskInfo(task.QueueImports, task.ImportTaskID(key)); ierr == nil {
			t.Errorf("%s: queued (payload %s)", src, info.Payload)
		}
	}
}
