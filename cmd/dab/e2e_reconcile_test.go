package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

// reconcileRun runs `dab reconcile --json` with args and decodes its report.
func reconcileRun(t *testing.T, e *e2e, wantCode int, args ...string) reconcileReport {
	t.Helper()
	out, errOut, code := e.run(nil, append([]string{"reconcile", "--json"}, args...)...)
	if code != wantCode {
		t.Fatalf("reconcile %v: exit %d, want %d\n%s%s", args, code, wantCode, out, errOut)
	}
	var r reconcileReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("reconcile %v: %v\n%s", args, err, out)
	}
	return r
}

func keysOf(items []reconcileItem) []string {
	var ks []string
	for _, it := range items {
		ks = append(ks, it.Key)
	}
	return ks
}

// TestReconcileRebuildsRecords: files uploaded with metadata (a price, a
// non-ASCII title and path), then Redis loses everything. `dab reconcile
// --dry-run` reports and changes nothing; `dab reconcile` brings every
// record back as the upload wrote it (plugins run again); a second run has
// nothing to do. An object put into the bucket by something else and a
// record whose object was deleted are reported, exit 1.
func TestReconcileRebuildsRecords(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	e.start(nil, "work")
	dir := t.TempDir()
	cafe, _ := writeRandomFile(t, dir, "café crème.txt", 1500)
	node, _ := writeRandomFile(t, dir, "NODE_intro.png", 2500)
	edge, _ := writeRandomFile(t, dir, "EDGE_intro_to_cave.png", 7<<20) // multipart
	ids := map[string]string{}
	for _, up := range [][]string{
		{cafe, "--folder", "forêt/été", "--meta", "price=10", "--meta", "title=Le café & la forêt = 100%"},
		{node, edge, "--type", "cyoa", "--folder", "forest", "--meta", "price=0"},
	} {
		out, errOut, code := e.run(nil, append([]string{"upload", "--wait", "--json"}, up...)...)
		if code != 0 {
			t.Fatalf("upload: exit %d\n%s%s", code, out, errOut)
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var ul uploadLine
			var res struct {
				AssetID string `json:"asset_id"`
			}
			if err := json.Unmarshal([]byte(l), &ul); err != nil || json.Unmarshal(ul.Result, &res) != nil || res.AssetID == "" {
				t.Fatalf("upload line %q: %v", l, err)
			}
			ids[ul.Key] = res.AssetID
		}
	}
	show := func(id string) (map[string]any, int) {
		out, _, code := e.run(nil, "assets", "show", id, "--json")
		var rec map[string]any
		if code == 0 {
			if err := json.Unmarshal([]byte(out), &rec); err != nil {
				t.Fatal(err)
			}
		}
		return rec, code
	}
	before := map[string]map[string]any{}
	for key, id := range ids {
		rec, code := show(id)
		if code != 0 {
			t.Fatalf("show %s: exit %d", id, code)
		}
		before[key] = rec
	}
	if md, _ := before["generic/forêt/été/café crème.txt"]["metadata"].(map[string]any); md["title"] != "Le café & la forêt = 100%" || md["price"] != "10" {
		t.Fatalf("record before: %v", before)
	}

	u, err := redis.ParseURL(e.redis)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(u)
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	// --dry-run reports what it would do and writes nothing.
	r := reconcileRun(t, e, 0, "--dry-run")
	if !r.DryRun || r.Objects != 3 || len(r.Recreated) != 3 || r.Recorded != 0 || r.problems() != 0 {
		t.Fatalf("dry run: %+v", r)
	}
	for _, id := range ids {
		if _, code := show(id); code == 0 {
			t.Fatalf("dry run recreated %s", id)
		}
	}
	out, _, code := e.run(nil, "reconcile", "--dry-run")
	if code != 0 || !strings.Contains(out, "would recreate") || !strings.Contains(out, "dry run: nothing changed") {
		t.Fatalf("dry run text: exit %d\n%s", code, out)
	}

	// The real run: every record back as the upload wrote it.
	r = reconcileRun(t, e, 0)
	if r.Objects != 3 || len(r.Recreated) != 3 || r.problems() != 0 {
		t.Fatalf("reconcile: %+v", r)
	}
	for key, id := range ids {
		got, code := show(id)
		if code != 0 {
			t.Fatalf("show %s after reconcile: exit %d", id, code)
		}
		want := before[key]
		// Which task and spool entry recorded it is the one thing a
		// rebuilt record does not know.
		for _, k := range []string{"task_id", "spool_id"} {
			delete(want, k)
			delete(got, k)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s rebuilt as\n%v\nwant\n%v", key, got, want)
		}
	}
	if rec := before["cyoa/forest/EDGE_intro_to_cave.png"]; rec["price"] != float64(0) || rec["content_type"] != "image/png" ||
		rec["metadata"].(map[string]any)["graph_role"] != "edge" || rec["source"] != "cli" || rec["created_at"] == "" {
		t.Errorf("cyoa record: %v", rec)
	}

	// Again: nothing to do.
	r = reconcileRun(t, e, 0)
	if r.Objects != 3 || r.Recorded != 3 || len(r.Recreated) != 0 || r.Records != 3 || r.problems() != 0 {
		t.Fatalf("second reconcile: %+v", r)
	}

	// An object from elsewhere, and a record whose object is gone.
	s3c := storagetest.Client(t, storagetest.Options(e.s3))
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(e.s3.Bucket), Key: aws.String("generic/stray.txt"),
		Body: strings.NewReader("not from dab"), Metadata: map[string]string{"sha256": "x"}}); err != nil {
		t.Fatal(err)
	}
	gone := "generic/forêt/été/café crème.txt"
	if _, err := s3c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(e.s3.Bucket), Key: aws.String(gone)}); err != nil {
		t.Fatal(err)
	}
	r = reconcileRun(t, e, 1)
	if !reflect.DeepEqual(keysOf(r.NoMetadata), []string{"generic/stray.txt"}) || !reflect.DeepEqual(keysOf(r.NoObject), []string{gone}) ||
		r.NoObject[0].AssetID != ids[gone] || r.Recorded != 2 || len(r.Recreated) != 0 {
		t.Fatalf("reconcile with problems: %+v", r)
	}
	out, errOut, code := e.run(nil, "reconcile")
	if code != 1 || !strings.Contains(out, "NO METADATA: s3://"+e.s3.Bucket+"/generic/stray.txt") ||
		!strings.Contains(out, "NO OBJECT: asset "+ids[gone]) || !strings.Contains(errOut, "found 2 problems") {
		t.Fatalf("reconcile text: exit %d\n%s%s", code, out, errOut)
	}
	// --prefix limits both checks: the cyoa story is in order.
	r = reconcileRun(t, e, 0, "--prefix", "cyoa/")
	if r.Objects != 2 || r.Records != 2 || r.problems() != 0 {
		t.Fatalf("reconcile --prefix cyoa/: %+v", r)
	}
}

// TestReconcileWhileWorking: records rebuilt while uploads run still end
// as one record per object, and reconcile then finds nothing to do.
func TestReconcileWhileWorking(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	dir := t.TempDir()
	var files []string
	for i := 0; i < 20; i++ {
		f, _ := writeRandomFile(t, dir, "f"+itoa(i)+".bin", 1000+i)
		files = append(files, f)
	}
	if out, errOut, code := e.run(nil, append([]string{"upload", "--meta", "price=3"}, files...)...); code != 0 {
		t.Fatalf("upload: exit %d\n%s%s", code, out, errOut)
	}
	e.start(nil, "work")
	var r reconcileReport
	harness.Eventually(t, time.Minute, "uploads and reconcile to settle", func() bool {
		// Exit 0 or 1 only: never a crash, never a conflict.
		out, errOut, code := e.run(nil, "reconcile", "--json")
		r = reconcileReport{}
		if code > 1 || json.Unmarshal([]byte(out), &r) != nil || len(r.Failed) != 0 || len(r.BadMetadata) != 0 {
			t.Fatalf("reconcile during uploads: exit %d\n%s%s", code, out, errOut)
		}
		return r.Objects == 20 && r.Recorded == 20 && r.Records == 20 && code == 0
	}, func() string { return fmt.Sprintf("last report %+v", r) })
	out, _, _ := e.run(nil, "assets", "list", "--json")
	if n := strings.Count(out, `"sha256"`); n != 20 {
		t.Fatalf("%d records, want 20:\n%s", n, out)
	}
}

// TestMetadataTooLargeAtIntake: metadata that would not fit in S3's 2 KB
// of object metadata is refused before the file is spooled, by `dab upload
// --meta` (exit 2) and by the HTTP intake (400 metadata_too_large).
func TestMetadataTooLargeAtIntake(t *testing.T) {
	t.Parallel()
	e, base := httpE2E(t)
	file, _ := writeRandomFile(t, t.TempDir(), "big-meta.txt", 100)
	// Each byte of "é" takes 3 as a %XX escape.
	long := strings.Repeat("é", storage.MetadataCallerBytesMax/6+1)
	_, errOut, code := e.run(nil, "upload", file, "--meta", "note="+long)
	if code != 2 || !strings.Contains(errOut, "2048 bytes (2 KB)") {
		t.Fatalf("upload --meta too large: exit %d\n%s", code, errOut)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.dataDir, "spool")); len(entries) != 0 {
		t.Fatalf("spooled anyway: %v", entries)
	}
	e.start(nil, "serve").waitLog(t, "http.listening", 30*time.Second)
	md, _ := json.Marshal(map[string]string{"note": long})
	for _, tt := range []struct {
		meta string
		want int
	}{{string(md), http.StatusBadRequest}, {`{"price":"5"}`, http.StatusAccepted}} {
		req, _ := http.NewRequest(http.MethodPut, base+"/v1/assets/generic/"+url.PathEscape("big-meta.txt"), strings.NewReader("hello"))
		req.Header.Set("Authorization", "Bearer "+e2eToken)
		req.Header.Set("Dab-Metadata", tt.meta)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want || (tt.want == http.StatusBadRequest && !strings.Contains(string(body), "metadata_too_large")) {
			t.Fatalf("PUT with %d bytes of metadata: %d %s", len(tt.meta), resp.StatusCode, body)
		}
	}
}
