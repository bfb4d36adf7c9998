package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

func (e *e2e) records(t *testing.T) *asset.Store {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(e.redis, "redis://"), "/0")})
	t.Cleanup(func() { rdb.Close() })
	return asset.NewStore(rdb, "dab:")
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *e2e) objectSHA(t *testing.T, key string) string {
	t.Helper()
	rc, _, err := storagetest.Store(t, e.s3).Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	h := sha256.New()
	io.Copy(h, rc)
	return hex.EncodeToString(h.Sum(nil))
}

// TestDropFolderServe runs `dab serve` (watcher and worker in one process)
// and drops files the ways users do.
func TestDropFolderServe(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	drop, done := filepath.Join(t.TempDir(), "drop"), filepath.Join(t.TempDir(), "done")
	e.env = append(e.env, "DAB_DROP_DIR="+drop, "DAB_DONE_DIR="+done, "DAB_SETTLE=500ms")
	e.start(nil, "serve").waitLog(t, "watcher.started", 30*time.Second)
	records := e.records(t)

	// A file written slowly, in chunks, over two seconds.
	slow := filepath.Join(drop, "cyoa", "forest", "NODE_slow.png")
	os.MkdirAll(filepath.Dir(slow), 0o750)
	f, err := os.Create(slow)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for i := range 8 {
		chunk := bytes.Repeat([]byte{byte(i + 1)}, 64<<10)
		f.Write(chunk)
		h.Write(chunk)
		time.Sleep(250 * time.Millisecond)
	}
	f.Close()
	slowSum := hex.EncodeToString(h.Sum(nil))
	// A file made elsewhere and moved in.
	outside, outsideSum := writeRandomFile(t, t.TempDir(), "EDGE_slow_to_end.png", 5000)
	if err := os.Rename(outside, filepath.Join(drop, "cyoa", "forest", "EDGE_slow_to_end.png")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "two records", func() bool { n, _ := records.Count(context.Background(), ""); return n == 2 })
	if got := e.objectSHA(t, "cyoa/forest/NODE_slow.png"); got != slowSum {
		t.Fatalf("slow file in S3 has sha %s, want %s", got, slowSum)
	}
	if got := e.objectSHA(t, "cyoa/forest/EDGE_slow_to_end.png"); got != outsideSum {
		t.Fatalf("moved file in S3 has sha %s, want %s", got, outsideSum)
	}
	// The originals are archived in the done folder; the drop folder is empty.
	if _, err := os.Stat(filepath.Join(done, "cyoa", "forest", "NODE_slow.png")); err != nil {
		t.Fatalf("original not archived: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(drop, "cyoa", "forest")); len(left) != 0 {
		t.Fatalf("files left in the drop folder: %v", left)
	}

	// Same name, other content: the file lands in the failed folder with the
	// reason beside it; renamed and dropped again, it is uploaded.
	writeRandomFile(t, filepath.Join(drop, "cyoa", "forest"), "NODE_slow.png", 100)
	failed := filepath.Join(e.dataDir, "failed", "cyoa", "forest", "NODE_slow.png")
	waitFor(t, 30*time.Second, "the conflicting file in the failed folder", func() bool {
		_, err := os.Stat(failed + ".error.json")
		return err == nil
	})
	note, _ := os.ReadFile(failed + ".error.json")
	if !strings.Contains(string(note), "never overwrites") || !strings.Contains(string(note), "drop folder") {
		t.Fatalf("error note: %s", note)
	}
	if err := os.Rename(failed, filepath.Join(drop, "cyoa", "forest", "NODE_slow-v2.png")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the renamed file's record", func() bool { n, _ := records.Count(context.Background(), ""); return n == 3 })
}

// TestWatcherKilledMidBurst kills `dab watch` with SIGKILL while it claims a
// burst of files, starts it again, and expects every file uploaded exactly
// once.
func TestWatcherKilledMidBurst(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	drop := filepath.Join(t.TempDir(), "drop")
	e.env = append(e.env, "DAB_DROP_DIR="+drop, "DAB_SETTLE=200ms")
	e.start(nil, "work").waitLog(t, "worker.started", 30*time.Second)
	w1 := e.start(nil, "watch")
	w1.waitLog(t, "watcher.started", 30*time.Second)
	const n = 300
	want := map[string]string{}
	for i := range n {
		dir := filepath.Join(drop, "generic", fmt.Sprintf("batch%d", i%3))
		os.MkdirAll(dir, 0o750)
		_, sum := writeRandomFile(t, dir, fmt.Sprintf("f%03d.bin", i), 1000+i)
		want[fmt.Sprintf("generic/batch%d/f%03d.bin", i%3, i)] = sum
	}
	waitFor(t, 30*time.Second, "some claims", func() bool { return strings.Count(w1.output(), "watcher.claimed") >= 30 })
	w1.cmd.Process.Signal(syscall.SIGKILL)
	<-w1.done

	e.start(nil, "watch").waitLog(t, "watcher.started", 30*time.Second)
	records := e.records(t)
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, _ := records.Count(context.Background(), "")
		if c >= n {
			break
		}
		if time.Now().After(deadline) {
			var left []string
			filepath.WalkDir(drop, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					left = append(left, p)
				}
				return nil
			})
			spooled, _ := os.ReadDir(filepath.Join(e.dataDir, "spool"))
			incoming, _ := os.ReadDir(filepath.Join(e.dataDir, "spool", ".incoming"))
			t.Fatalf("%d of %d records after 90s; left in drop: %v; spool: %d entries, incoming %d", c, n, left, len(spooled), len(incoming))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // anything doubled would show up now
	if c, _ := records.Count(context.Background(), ""); c != n {
		t.Fatalf("%d records, want %d", c, n)
	}
	page, err := records.List(context.Background(), asset.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range page.Records {
		if want[r.S3Key] != r.SHA256 {
			t.Fatalf("%s: record sha %s, want %s", r.S3Key, r.SHA256, want[r.S3Key])
		}
		delete(want, r.S3Key)
	}
	if len(want) != 0 {
		t.Fatalf("%d files never recorded", len(want))
	}
	waitFor(t, 10*time.Second, "an empty spool", func() bool {
		entries, _ := os.ReadDir(filepath.Join(e.dataDir, "spool"))
		for _, de := range entries {
			if !strings.HasPrefix(de.Name(), ".") {
				return false
			}
		}
		return true
	})
}

// TestDropFiveThousand drops 5,000 files at once into a running `dab serve`:
// every one is uploaded and recorded, none twice.
func TestDropFiveThousand(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 5,000 files")
	}
	t.Parallel()
	e := newE2E(t)
	drop := filepath.Join(t.TempDir(), "drop")
	e.env = append(e.env, "DAB_DROP_DIR="+drop, "DAB_SETTLE=200ms", "DAB_CONCURRENCY=16")
	e.start(nil, "serve").waitLog(t, "watcher.started", 30*time.Second)
	const n = 5000
	staging := t.TempDir()
	for i := range n {
		if err := os.WriteFile(filepath.Join(staging, fmt.Sprintf("f%04d", i)), []byte(fmt.Sprint(i)), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// All at once: one rename of the folder full of files.
	if err := os.Rename(staging, filepath.Join(drop, "generic", "burst")); err != nil {
		t.Fatal(err)
	}
	records := e.records(t)
	waitFor(t, 5*time.Minute, "5,000 records", func() bool { c, _ := records.Count(context.Background(), ""); return c >= n })
	time.Sleep(time.Second)
	seen := map[string]bool{}
	cursor := ""
	for {
		page, err := records.List(context.Background(), asset.ListOptions{Limit: 1000, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Records {
			if seen[r.S3Key] {
				t.Fatalf("%s recorded twice", r.S3Key)
			}
			seen[r.S3Key] = true
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	if len(seen) != n {
		t.Fatalf("%d records, want %d", len(seen), n)
	}
}
