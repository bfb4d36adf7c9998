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

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/storage/storagetest"
	"github.com/dab-assets/dab/worker/task"
)

func (e *e2e) records(t *testing.T) *asset.Store {
	t.Helper()
	return asset.NewStore(e.redisClient(t), "dab:")
}

// redisClient connects to the test's Redis as dab does: one server, or
// the master its sentinels name (a URL with master_name).
func (e *e2e) redisClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	var rdb redis.UniversalClient
	if strings.Contains(e.redis, "master_name=") {
		opt, err := redis.ParseFailoverURL(e.redis)
		if err != nil {
			t.Fatal(err)
		}
		rdb = redis.NewFailoverClient(opt)
	} else {
		opt, err := redis.ParseURL(e.redis)
		if err != nil {
			t.Fatal(err)
		}
		rdb = redis.NewClient(opt)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// uploadsLeft returns a probe of what is left to upload: files in the drop
// folder, spool entries (whole and half-written) and upload tasks not yet
// finished. idle is true when there is none.
func (e *e2e) uploadsLeft(t *testing.T, drop string) func() (state string, idle bool) {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(e.redisClient(t))
	return func() (string, bool) {
		var left []string
		filepath.WalkDir(drop, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				left = append(left, p)
			}
			return nil
		})
		spooled := 0
		des, _ := os.ReadDir(filepath.Join(e.dataDir, "spool"))
		for _, de := range des {
			if !strings.HasPrefix(de.Name(), ".") {
				spooled++
			}
		}
		incoming, _ := os.ReadDir(filepath.Join(e.dataDir, "spool", ".incoming"))
		tasks := 0
		queues, err := insp.Queues()
		for _, q := range queues {
			if q != task.QueueUploads && !strings.HasPrefix(q, task.QueueUploads+":") {
				continue
			}
			info, qerr := insp.GetQueueInfo(q)
			if qerr != nil {
				err = qerr
				break
			}
			tasks += info.Pending + info.Active + info.Scheduled + info.Retry
		}
		state := fmt.Sprintf("left in drop: %v; spool: %d entries, %d incoming; %d upload tasks unfinished (queue error %v)", left, spooled, len(incoming), tasks, err)
		return state, len(left) == 0 && spooled == 0 && len(incoming) == 0 && tasks == 0 && err == nil
	}
}

// waitIdle waits until nothing is left to upload (see uploadsLeft): only
// then does a count of records show that nothing was uploaded twice.
func (e *e2e) waitIdle(t *testing.T, drop string, timeout time.Duration) {
	t.Helper()
	probe, state := e.uploadsLeft(t, drop), ""
	harness.Eventually(t, timeout, "nothing left to upload", func() bool {
		var idle bool
		state, idle = probe()
		return idle
	}, func() string { return state })
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
	harness.Eventually(t, 30*time.Second, "two records", func() bool { n, _ := records.Count(context.Background(), ""); return n == 2 }, nil)
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
	harness.Eventually(t, 30*time.Second, "the conflicting file in the failed folder", func() bool {
		_, err := os.Stat(failed + ".error.json")
		return err == nil
	}, nil)
	note, _ := os.ReadFile(failed + ".error.json")
	if !strings.Contains(string(note), "never overwrites") || !strings.Contains(string(note), "drop folder") {
		t.Fatalf("error note: %s", note)
	}
	if err := os.Rename(failed, filepath.Join(drop, "cyoa", "forest", "NODE_slow-v2.png")); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, "the renamed file's record", func() bool { n, _ := records.Count(context.Background(), ""); return n == 3 }, nil)
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
	harness.Eventually(t, 30*time.Second, "some claims", func() bool { return strings.Count(w1.output(), "watcher.queued") >= 30 }, nil)
	w1.cmd.Process.Signal(syscall.SIGKILL)
	<-w1.done

	e.start(nil, "watch").waitLog(t, "watcher.started", 30*time.Second)
	records := e.records(t)
	harness.Eventually(t, 90*time.Second, fmt.Sprintf("%d records", n), func() bool {
		c, _ := records.Count(context.Background(), "")
		return c >= n
	}, func() string {
		c, _ := records.Count(context.Background(), "")
		state, _ := e.uploadsLeft(t, drop)()
		return fmt.Sprintf("%d records; %s", c, state)
	})
	e.waitIdle(t, drop, 30*time.Second) // anything doubled would show up now
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
	// One asset.recorded event per record, whatever the kill cut short.
	events := recordedEvents(t, e)
	for _, r := range page.Records {
		if events[r.ID] != 1 {
			t.Fatalf("asset %s (%s): %d asset.recorded events, want 1", r.ID, r.S3Key, events[r.ID])
		}
	}
	if len(events) != n {
		t.Fatalf("events for %d assets, want %d", len(events), n)
	}
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
	harness.Eventually(t, 5*time.Minute, "5,000 records", func() bool { c, _ := records.Count(context.Background(), ""); return c >= n }, nil)
	e.waitIdle(t, drop, time.Minute)
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
