package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dab-assets/dab/internal/storage/storagetest"
)

// TestImportCLI: `dab import` banks an object of another bucket through a
// running `dab work`, with its metadata; the same key again queues nothing;
// a request dab refuses at the edge is a usage error.
func TestImportCLI(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	ctx := context.Background()
	cl := storagetest.Client(t, storagetest.Options(e.s3))
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("partner")}); err != nil {
		t.Fatal(err)
	}
	src, sum := writeRandomFile(t, t.TempDir(), "cover.png", 40_000)
	body, _ := os.ReadFile(src)
	if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("partner"), Key: aws.String("covers/cover.png"), Body: bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}
	e.start(nil, "work").waitLog(t, "worker.started", 30*time.Second)
	args := []string{"import", "s3://partner/covers/cover.png", "--type", "generic", "--path", "partner/cover.png", "--sha256", sum,
		"--meta", "price=2", "--key", "imp-cover", "--wait", "--json"}
	out, errOut, code := e.run(nil, args...)
	if code != 0 {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	var line uploadLine
	var res struct {
		AssetID string `json:"asset_id"`
		SHA256  string `json:"sha256"`
	}
	if err := json.Unmarshal([]byte(out), &line); err != nil || json.Unmarshal(line.Result, &res) != nil || res.AssetID == "" || res.SHA256 != sum {
		t.Fatalf("import output %s: %v", out, err)
	}
	if out, errOut, code := e.run(nil, "assets", "show", res.AssetID); code != 0 || !strings.Contains(out, "generic/partner/cover.png") || !strings.Contains(out, "price") {
		t.Fatalf("assets show: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := e.run(nil, args[:len(args)-2]...); code != 0 || !strings.Contains(out, "not queued again") {
		t.Fatalf("the same import again: exit %d\n%s%s", code, out, errOut)
	}
	for _, bad := range [][]string{
		{"import", "ftp://example.com/x", "--type", "generic", "--path", "x.png"},
		{"import", "s3://partner/covers/cover.png", "--type", "generic", "--path", "../x.png"},
		{"import", "s3://partner/covers/cover.png", "--type", "generic"},
	} {
		if out, errOut, code := e.run(nil, bad...); code != 2 {
			t.Errorf("dab %v: exit %d, want 2\n%s%s", bad, code, out, errOut)
		}
	}
}
