package watcher

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/worker/task"
)

// TestRequeueOrphans: entries whose task is gone are queued again, once;
// entries marked failed and entries younger than OrphanAgeMin are left.
func TestRequeueOrphans(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	put := func(name string) *spool.Manifest {
		m, err := b.spool.Put(bytes.NewReader([]byte(name)), spool.Input{Type: "generic", Path: name, Source: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	orphan, failed := put("orphan.bin"), put("failed.bin")
	if err := b.spool.MarkFailed(failed.ID, spool.Failure{Code: "Conflict", Message: "kept for an operator"}); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(OrphanAgeMin + time.Second)
	if n, err := RequeueOrphans(ctx, b.spool, b.client, task.Lookup{RDB: b.rdb}, task.QueueUploads, time.Now()); err != nil || n != 0 {
		t.Fatalf("young entries: %d queued, %v; want none", n, err)
	}
	if n, err := RequeueOrphans(ctx, b.spool, b.client, task.Lookup{RDB: b.rdb}, task.QueueUploads, later); err != nil || n != 1 {
		t.Fatalf("first round: %d queued, %v; want 1", n, err)
	}
	if _, err := b.insp.GetTaskInfo(task.QueueUploads, task.UploadTaskID(orphan.ID)); err != nil {
		t.Fatalf("the orphan's task: %v", err)
	}
	if _, err := b.insp.GetTaskInfo(task.QueueUploads, task.UploadTaskID(failed.ID)); err == nil {
		t.Fatal("the failed entry was queued")
	}
	if n, err := RequeueOrphans(ctx, b.spool, b.client, task.Lookup{RDB: b.rdb}, task.QueueUploads, later); err != nil || n != 0 {
		t.Fatalf("second round: %d queued, %v; want none (the task exists)", n, err)
	}
	b.redis.Stop()
	if _, err := RequeueOrphans(ctx, b.spool, b.client, task.Lookup{RDB: b.rdb}, task.QueueUploads, later); err == nil {
		t.Fatal("no error with Redis down")
	}
}

// TestStartQueuesPastADamagedEntry: at start the watcher queues every spool
// entry without a task, even when another entry's manifest is damaged; the
// damaged one is logged with its file and what to do.
func TestStartQueuesPastADamagedEntry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	good, err := b.spool.Put(bytes.NewReader([]byte("good")), spool.Input{Type: "generic", Path: "good.bin", Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := b.spool.Put(bytes.NewReader([]byte("bad")), spool.Input{Type: "generic", Path: "bad.bin", Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.spool.Dir(), bad.ID, "manifest.json"), []byte("{"), 0o640); err != nil {
		t.Fatal(err)
	}
	b.start(b.config(), b.spool)
	b.eventually(10*time.Second, "the good entry queued", func() bool {
		_, err := b.insp.GetTaskInfo(task.QueueUploads, task.UploadTaskID(good.ID))
		return err == nil
	})
	if logs := b.logs.String(); !strings.Contains(logs, "watcher.recover_failed") || !strings.Contains(logs, bad.ID) {
		t.Fatalf("the damaged entry was not reported:\n%s", logs)
	}
}
