package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
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
	e.env = append(e.env, "DAB_IMPORT_S3_BUCKETS=partner")
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
	// Without --path the asset takes the source's file name.
	out, errOut, code = e.run(nil, "import", "s3://partner/covers/cover.png", "--type", "generic", "--key", "imp-name", "--wait", "--json")
	var named uploadLine
	if code != 0 || json.Unmarshal([]byte(out), &named) != nil || named.Key != "generic/cover.png" || named.State != "completed" {
		t.Fatalf("import without --path: exit %d\n%s%s", code, out, errOut)
	}
	for _, bad := range [][]string{
		{"import", "ftp://example.com/x", "--type", "generic", "--path", "x.png"},
		{"import", "s3://partner/covers/cover.png", "--type", "generic", "--path", "../x.png"},
		{"import", "s3://partner/covers/cover.png", "--path", "x.png"},
		{"import", "https://cdn.example.org/covers/", "--type", "generic"},
		{"import", "s3://elsewhere/covers/cover.png", "--type", "generic", "--path", "x.png"},
		{"import", "s3://" + e.s3.Bucket + "/generic/cover.png", "--type", "generic", "--path", "x.png"},
	} {
		if out, errOut, code := e.run(nil, bad...); code != 2 {
			t.Errorf("dab %v: exit %d, want 2\n%s%s", bad, code, out, errOut)
		}
	}
}

// TestWorkerKilledMidImport kills `dab work` with SIGKILL while it streams
// an https:// source (half the body sent, the rest held back), starts
// another worker, and expects the import to start over and bank the file
// once: one object with the source's bytes, one record, one
// asset.recorded event, and no temporary file left. Asynq hands the task
// back once the dead worker's lease (30s) expires, so this takes a minute.
func TestWorkerKilledMidImport(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about a minute: asynq recovers a killed worker's task after its lease expires")
	}
	t.Parallel()
	e := newE2E(t)
	data := bytes.Repeat([]byte("dab import "), 400_000) // 4.4 MB
	sum := sha256.Sum256(data)
	var requests atomic.Int32
	halfSent := make(chan struct{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	src, ca := harness.TLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		if requests.Add(1) == 1 {
			w.Write(data[:len(data)/2])
			w.(http.Flusher).Flush()
			close(halfSent)
			select { // hold the rest back until the worker is dead
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.Write(data)
	}))
	env := []string{"DAB_IMPORT_CA_FILE=" + ca, "DAB_IMPORT_ALLOW_PRIVATE=127.0.0.1"}

	w1 := e.start(env, "work")
	w1.waitLog(t, "worker.started", 30*time.Second)
	if out, errOut, code := e.run(nil, "import", src.URL+"/book.pdf", "--type", "generic", "--path", "web/book.pdf", "--key", "killed-import"); code != 0 {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	select {
	case <-halfSent:
	case <-time.After(time.Minute):
		t.Fatalf("the worker never fetched the source; its log:\n%s", w1.output())
	}
	importDir := filepath.Join(e.dataDir, "imports")
	if left, _ := filepath.Glob(filepath.Join(importDir, "import-*")); len(left) != 1 {
		t.Fatalf("temporary files while streaming: %v, want 1", left)
	}
	if err := w1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-w1.done

	w2 := e.start(env, "work")
	w2.waitLog(t, `"msg":"import.done"`, 3*time.Minute)
	if !strings.Contains(w2.output(), "import.leftovers_removed") {
		t.Errorf("the new worker did not remove the killed import's temporary file:\n%s", w2.output())
	}
	if left, _ := filepath.Glob(filepath.Join(importDir, "import-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("the source was asked %d times, want 2 (the killed run, the run after it)", n)
	}
	rc, n, err := storagetest.Store(t, e.s3).Get(context.Background(), "generic/web/book.pdf")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	io.Copy(h, rc)
	rc.Close()
	if n != int64(len(data)) || hex.EncodeToString(h.Sum(nil)) != hex.EncodeToString(sum[:]) {
		t.Fatalf("object has %d bytes sha %x, want %d bytes %x", n, h.Sum(nil), len(data), sum)
	}
	if count, _ := asset.NewStore(e.redisClient(t), "dab:").Count(context.Background(), ""); count != 1 {
		t.Fatalf("%d records, want exactly 1", count)
	}
	events := recordedEvents(t, e)
	if len(events) != 1 {
		t.Fatalf("asset.recorded events %v, want one", events)
	}
	for id, n := range events {
		if n != 1 {
			t.Fatalf("asset %s: %d asset.recorded events, want 1", id, n)
		}
	}
}

// TestImportPathOf: without --path, an import is named after its source's
// file: the last segment of the key or of the decoded URL path.
func TestImportPathOf(t *testing.T) {
	t.Parallel()
	for src, want := range map[string]string{
		"s3://partner/covers/NODE_intro.png":          "NODE_intro.png",
		"s3://partner/a.png":                          "a.png",
		"s3://partner/covers/":                        "",
		"https://cdn.example.org/x/y/cover%20art.png": "cover art.png",
		"https://cdn.example.org/a.png?sig=abc":       "a.png",
		"https://cdn.example.org/":                    "",
		"https://cdn.example.org":                     "",
		"ftp://x/y.png":                               "",
	} {
		if got := importPathOf(src); got != want {
			t.Errorf("importPathOf(%q) = %q, want %q", src, got, want)
		}
	}
}
