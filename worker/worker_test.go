package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
	"github.com/dab-assets/dab/worker"
	"github.com/dab-assets/dab/worker/task"
)

// bundle holds the real servers and parts of one test.
type bundle struct {
	redis  *localsvc.Redis
	rdb    *redis.Client
	s3     *harness.S3
	spool  *spool.Spool
	assets *asset.Store
	client *asynq.Client
	insp   *asynq.Inspector
	failed string // the failed folder
}

func setup(t *testing.T) *bundle {
	t.Helper()
	r := harness.Redis(t)
	rdb := harness.RedisClient(t, r)
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{
		redis: r, rdb: rdb, s3: harness.StartS3(t), spool: sp,
		assets: asset.NewStore(rdb, "dab:"),
		client: asynq.NewClientFromRedisClient(rdb),
		insp:   asynq.NewInspectorFromRedisClient(rdb),
		failed: filepath.Join(t.TempDir(), "failed"),
	}
	return b
}

// runWith runs a worker on the bundle's servers until stop is called or
// the test ends; tweak changes the defaults (concurrency 4, no log, the
// harness's S3, a plain ledger) first.
func (b *bundle) runWith(t *testing.T, tweak func(*worker.Config, *worker.Deps)) (stop func()) {
	t.Helper()
	c := storagetest.Options(b.s3)
	cfg := worker.Config{Concurrency: 4, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), FailedDir: b.failed}
	deps := worker.Deps{Spool: b.spool, Storage: storage.New(storagetest.Client(t, c), c), Assets: b.assets, Plugins: builtin.Registry(), Ledger: ledger.New(b.rdb, "dab:", "house")}
	if tweak != nil {
		tweak(&cfg, &deps)
	}
	w, err := worker.New(b.rdb, cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// startWorker runs a worker with the given S3 settings until the test ends.
func (b *bundle) startWorker(t *testing.T, c storage.Options) {
	t.Helper()
	b.runWith(t, func(_ *worker.Config, d *worker.Deps) { d.Storage = storage.New(storagetest.Client(t, c), c) })
}

// spoolBytes spools data as typ/path and enqueues its upload.
func (b *bundle) spoolBytes(t *testing.T, typ, path string, data []byte) *spool.Manifest {
	t.Helper()
	m, err := b.spool.Put(bytes.NewReader(data), spool.Input{Type: typ, Path: path, Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := task.NewUpload(task.UploadPayload{SpoolID: m.ID, Type: m.Type, Key: m.Key()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Enqueue(tk); err != nil {
		t.Fatal(err)
	}
	return m
}

// waitTask polls task id in queue until it reaches state want; a task that
// ends (completed or archived) in another state fails the test at once.
func (b *bundle) waitTask(t *testing.T, queue, id string, want asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	return b.pollTask(t, queue, id, fmt.Sprintf("task %s to be %s", id, want), func(info *asynq.TaskInfo) bool {
		if info.State != want && (info.State == asynq.TaskStateArchived || info.State == asynq.TaskStateCompleted) {
			t.Fatalf("task %s is %s (last error %q), want %s", id, info.State, info.LastErr, want)
		}
		return info.State == want
	})
}

// waitState waits for an upload task (waitTask on the uploads queue).
func (b *bundle) waitState(t *testing.T, taskID string, want asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	return b.waitTask(t, task.QueueUploads, taskID, want)
}

// pollTask polls task id in queue for up to a minute until done says so.
func (b *bundle) pollTask(t *testing.T, queue, id, what string, done func(*asynq.TaskInfo) bool) *asynq.TaskInfo {
	t.Helper()
	var (
		info *asynq.TaskInfo
		err  error
	)
	harness.Eventually(t, 60*time.Second, what, func() bool {
		info, err = b.insp.GetTaskInfo(queue, id)
		return err == nil && done(info)
	}, func() string { return fmt.Sprintf("info %+v, err %v", info, err) })
	return info
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func (b *bundle) readObject(t *testing.T, key string) []byte {
	t.Helper()
	rc, _, err := storagetest.Store(t, b.s3).Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestUploadPipeline(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, storagetest.Options(b.s3))
	tests := []struct {
		typ, path string
		size      int
		wantMeta  map[string]string
	}{
		{"cyoa", "forest/NODE_intro.png", 4096, map[string]string{"graph_role": "node", "node_id": "intro", "story": "forest"}},
		{"cyoa", "EDGE_intro_to_cave.png", 10, map[string]string{"graph_role": "edge", "src_node": "intro", "dst_node": "cave", "story": "default"}},
		{"cyoa", "NODE_bad name.png", 1, map[string]string{"graph_role": "invalid"}},
		{"generic", "empty.txt", 0, map[string]string{"extension": "txt"}},
		{"generic", "big/video.bin", 13<<20 + 5, map[string]string{"extension": "bin"}}, // multipart in storagetest.Options
	}
	for i, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			data := randomBytes(tt.size, uint64(i))
			m := b.spoolBytes(t, tt.typ, tt.path, data)
			info := b.waitState(t, task.UploadTaskID(m.ID), asynq.TaskStateCompleted)
			var res task.UploadResult
			if err := json.Unmarshal(info.Result, &res); err != nil {
				t.Fatalf("result %q: %v", info.Result, err)
			}
			got := b.readObject(t, tt.typ+"/"+tt.path)
			if !bytes.Equal(got, data) || harness.SHA256Hex(got) != m.SHA256 {
				t.Fatalf("object differs from the file: %d bytes sha %s, want %d bytes sha %s", len(got), harness.SHA256Hex(got), len(data), m.SHA256)
			}
			rec, err := b.assets.Get(context.Background(), res.AssetID)
			if err != nil {
				t.Fatal(err)
			}
			if rec.S3Key != tt.typ+"/"+tt.path || rec.SHA256 != harness.SHA256Hex(data) || rec.Size != int64(tt.size) || rec.S3Bucket != b.s3.Bucket || rec.Owner != "" {
				t.Fatalf("record = %+v", rec)
			}
			for k, v := range tt.wantMeta {
				if rec.Metadata[k] != v {
					t.Fatalf("metadata[%s] = %q, want %q (all: %v)", k, rec.Metadata[k], v, rec.Metadata)
				}
			}
			if _, err := b.spool.Get(m.ID); !errors.Is(err, spool.ErrNotFound) {
				t.Fatalf("spool entry still there after success: %v", err)
			}
		})
	}
}

func TestRerunIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, storagetest.Options(b.s3))
	data := randomBytes(1000, 1)
	m := b.spoolBytes(t, "cyoa", "NODE_a.png", data)
	id := task.UploadTaskID(m.ID)
	b.waitState(t, id, asynq.TaskStateCompleted)

	// Enqueuing the same entry again is a no-op: the finished task is retained.
	tk, _ := task.NewUpload(task.UploadPayload{SpoolID: m.ID})
	if _, err := b.client.Enqueue(tk); !task.IsAlreadyQueued(err) {
		t.Fatalf("re-enqueue err = %v, want ErrTaskIDConflict", err)
	}
	// A re-run of the finished task (a lost ack) succeeds without a second record.
	if err := b.insp.DeleteTask(task.QueueUploads, id); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Enqueue(tk); err != nil {
		t.Fatal(err)
	}
	b.waitState(t, id, asynq.TaskStateCompleted)
	// The same bytes under the same name from a new spool entry: one record.
	m2 := b.spoolBytes(t, "cyoa", "NODE_a.png", data)
	info := b.waitState(t, task.UploadTaskID(m2.ID), asynq.TaskStateCompleted)
	if !strings.Contains(string(info.Result), `"existed":true`) {
		t.Fatalf("result %s, want existed", info.Result)
	}
	if n, _ := b.assets.Count(context.Background(), ""); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}

func TestSameNameConflictKeepsBoth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, storagetest.Options(b.s3))
	first := randomBytes(100, 1)
	m1 := b.spoolBytes(t, "cyoa", "NODE_a.png", first)
	b.waitState(t, task.UploadTaskID(m1.ID), asynq.TaskStateCompleted)

	second := randomBytes(100, 2)
	m2 := b.spoolBytes(t, "cyoa", "NODE_a.png", second)
	info := b.waitState(t, task.UploadTaskID(m2.ID), asynq.TaskStateArchived)
	if !strings.Contains(info.LastErr, "never overwrites") || info.Retried != 0 {
		t.Fatalf("archived after %d retries with %q", info.Retried, info.LastErr)
	}
	if got := b.readObject(t, "cyoa/NODE_a.png"); !bytes.Equal(got, first) {
		t.Fatal("the first object was overwritten")
	}
	// The second file is kept in the failed folder, the reason beside it.
	kept := filepath.Join(b.failed, "cyoa", "NODE_a.png")
	if data, err := os.ReadFile(kept); err != nil || !bytes.Equal(data, second) {
		t.Fatalf("conflicting file not kept in the failed folder: %v", err)
	}
	note, err := os.ReadFile(kept + ".error.json")
	if err != nil || !strings.Contains(string(note), `"code": "Conflict"`) || !strings.Contains(string(note), "rename the file") {
		t.Fatalf("error note = %s, %v", note, err)
	}
	if !strings.Contains(info.LastErr, kept) {
		t.Fatalf("task error does not say where the file is: %q", info.LastErr)
	}
	fs := b.uploadFailures(t)
	if len(fs) != 1 || fs[0].Code != "Conflict" || fs[0].Remedy != "new_file" || !strings.Contains(fs[0].Fix, "cyoa/NODE_a.png, with NODE_a.png.error.json beside it") ||
		strings.Contains(fs[0].Reason+fs[0].Fix, b.failed) {
		t.Fatalf("upload.failed events %+v, want one Conflict naming no server path", fs)
	}
}

func TestPermanentErrorsThenFixAndRerun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*storage.Options)
		want   string
	}{
		{"wrong secret", func(c *storage.Options) { c.SecretAccessKey = "not-the-secret" }, "SignatureDoesNotMatch: the secret key is wrong: check AWS_SECRET_ACCESS_KEY"},
		{"unknown access key", func(c *storage.Options) { c.AccessKeyID = "nobody" }, "check AWS_ACCESS_KEY_ID"},
		{"missing bucket", func(c *storage.Options) { c.Bucket = "no-such-bucket" }, `NoSuchBucket: bucket "no-such-bucket" does not exist`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			bad := storagetest.Options(b.s3)
			tt.mutate(&bad)
			// The broken worker runs in its own scope so the fixed one replaces it.
			badCtx, stopBad := context.WithCancel(context.Background())
			client, _ := storage.NewClient(context.Background(), bad)
			w, err := worker.New(b.rdb, worker.Config{Concurrency: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), FailedDir: b.failed},
				worker.Deps{Spool: b.spool, Storage: storage.New(client, bad), Assets: b.assets, Plugins: builtin.Registry(), Ledger: ledger.New(b.rdb, "dab:", "house")})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- w.Run(badCtx) }()

			data := randomBytes(2000, 3)
			m := b.spoolBytes(t, "generic", "x.bin", data)
			info := b.waitState(t, task.UploadTaskID(m.ID), asynq.TaskStateArchived)
			if !strings.Contains(info.LastErr, tt.want) || info.Retried != 0 {
				t.Fatalf("archived after %d retries with %q, want %q", info.Retried, info.LastErr, tt.want)
			}
			if _, ok, _ := b.spool.FailureMark(m.ID); !ok {
				t.Fatal("spool entry not marked failed")
			}
			stopBad()
			<-done

			// The operator fixes the configuration and re-runs the archived task.
			b.startWorker(t, storagetest.Options(b.s3))
			if err := b.insp.RunTask(task.QueueUploads, task.UploadTaskID(m.ID)); err != nil {
				t.Fatal(err)
			}
			b.waitState(t, task.UploadTaskID(m.ID), asynq.TaskStateCompleted)
			if got := b.readObject(t, "generic/x.bin"); !bytes.Equal(got, data) {
				t.Fatal("object differs after the re-run")
			}
		})
	}
}

func TestMissingSpoolEntryAndBadPayload(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, storagetest.Options(b.s3))
	// A task for an entry that was never spooled here.
	tk, _ := task.NewUpload(task.UploadPayload{SpoolID: spool.NewID()})
	info, err := b.client.Enqueue(tk)
	if err != nil {
		t.Fatal(err)
	}
	got := b.waitState(t, info.ID, asynq.TaskStateArchived)
	if !strings.Contains(got.LastErr, "is not in") || !strings.Contains(got.LastErr, "upload the file again") {
		t.Fatalf("missing entry error = %q", got.LastErr)
	}
	// A payload another system got wrong.
	bad, err := b.client.Enqueue(asynq.NewTask(task.TypeUpload, []byte(`{"spool_id": 42}`), asynq.Queue(task.QueueUploads)))
	if err != nil {
		t.Fatal(err)
	}
	got = b.waitState(t, bad.ID, asynq.TaskStateArchived)
	if !strings.Contains(got.LastErr, "bad task payload") || got.Retried != 0 {
		t.Fatalf("bad payload error = %q after %d retries", got.LastErr, got.Retried)
	}
}

func TestRedisRestartLosesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, storagetest.Options(b.s3))
	m := b.spoolBytes(t, "generic", "before.txt", []byte("before"))
	b.waitState(t, task.UploadTaskID(m.ID), asynq.TaskStateCompleted)
	// Redis restarts (AOF on): the record survives and the worker reconnects.
	if err := b.redis.Restart(); err != nil {
		t.Fatal(err)
	}
	m2 := b.spoolBytes(t, "generic", "after.txt", []byte("after"))
	b.waitState(t, task.UploadTaskID(m2.ID), asynq.TaskStateCompleted)
	if n, _ := b.assets.Count(context.Background(), "generic"); n != 2 {
		t.Fatalf("%d records after restart, want 2", n)
	}
}

// TestGrownSpoolEntryFailsWhole: a spool file that grew after its claim
// (a writer dab could not see) is not uploaded cut short: the task is
// archived at once and the whole file waits in the failed folder.
func TestGrownSpoolEntryFailsWhole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	data := randomBytes(1000, 3)
	m, err := b.spool.Put(bytes.NewReader(data), spool.Input{Type: "generic", Path: "grew.bin", Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(b.spool.DataPath(m.ID), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	more := randomBytes(500, 4)
	f.Write(more)
	f.Close()
	tk, _ := task.NewUpload(task.UploadPayload{SpoolID: m.ID, Type: m.Type, Key: m.Key()})
	if _, err := b.client.Enqueue(tk); err != nil {
		t.Fatal(err)
	}
	b.startWorker(t, storagetest.Options(b.s3))
	info := b.waitState(t, task.UploadTaskID(m.ID), asynq.TaskStateArchived)
	if info.Retried != 0 {
		t.Fatalf("archived after %d retries with %q", info.Retried, info.LastErr)
	}
	kept := filepath.Join(b.failed, "generic", "grew.bin")
	if got, err := os.ReadFile(kept); err != nil || !bytes.Equal(got, append(data, more...)) {
		t.Fatalf("the whole file is not in the failed folder: %d bytes, %v", len(got), err)
	}
	if note, err := os.ReadFile(kept + ".error.json"); err != nil || !strings.Contains(string(note), "SpoolChanged") {
		t.Fatalf("error note = %s, %v", note, err)
	}
}

// TestGrownCrossFilesystemOriginalFailsWhole: a file claimed into a spool
// on another filesystem (the tmpfs /dev/shm; the drop folder on disk) whose
// writer, unseen, writes again after the claim. Its original, kept until
// the entry ends, grew: the upload is refused at once and the failed folder
// holds every byte, nothing goes to the bucket cut short. A file that did
// not grow is uploaded and its original removed with the entry.
func TestGrownCrossFilesystemOriginalFailsWhole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	shm, err := os.MkdirTemp("/dev/shm", "dab-worker-test-")
	if err != nil {
		t.Fatalf("this test needs a tmpfs at /dev/shm for the spool: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	if b.spool, err = spool.Open(filepath.Join(shm, "spool")); err != nil {
		t.Fatal(err)
	}
	drop := t.TempDir()
	claim := func(name string, data []byte, links ...string) *spool.Manifest {
		t.Helper()
		src := filepath.Join(drop, name)
		if err := os.WriteFile(src, data, 0o640); err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if err := os.Link(src, l); err != nil {
				t.Fatal(err)
			}
		}
		st, _ := os.Stat(src)
		m, err := b.spool.Claim(src, spool.Input{Type: "generic", Path: name, Source: "watcher"}, spool.FileState{Size: st.Size(), ModTime: st.ModTime()})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	enqueue := func(m *spool.Manifest) {
		t.Helper()
		tk, _ := task.NewUpload(task.UploadPayload{SpoolID: m.ID, Type: m.Type, Key: m.Key()})
		if _, err := b.client.Enqueue(tk); err != nil {
			t.Fatal(err)
		}
	}
	data, more := randomBytes(100000, 7), randomBytes(100000, 8)
	// The writer's hold on the file: a second link to the same inode (as an
	// open descriptor is), which, unlike a descriptor, no lease sees.
	writer := filepath.Join(t.TempDir(), "writer-holds")
	grew := claim("grew.bin", data, writer)
	f, err := os.OpenFile(writer, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(more) // after the claim, into the file it took
	f.Close()
	same := claim("same.bin", data)
	enqueue(grew)
	enqueue(same)
	b.startWorker(t, storagetest.Options(b.s3))

	info := b.waitState(t, task.UploadTaskID(grew.ID), asynq.TaskStateArchived)
	if info.Retried != 0 {
		t.Fatalf("archived after %d retries with %q", info.Retried, info.LastErr)
	}
	kept := filepath.Join(b.failed, "generic", "grew.bin")
	if got, err := os.ReadFile(kept); err != nil || !bytes.Equal(got, append(data, more...)) {
		t.Fatalf("the whole file is not in the failed folder: %d bytes, %v", len(got), err)
	}
	if note, err := os.ReadFile(kept + ".error.json"); err != nil || !strings.Contains(string(note), "SpoolChanged") {
		t.Fatalf("error note = %s, %v", note, err)
	}

	b.waitState(t, task.UploadTaskID(same.ID), asynq.TaskStateCompleted)
	if n, _ := b.assets.Count(context.Background(), "generic"); n != 1 {
		t.Fatalf("%d records, want only same.bin's", n)
	}
	if left, _ := os.ReadDir(drop); len(left) != 0 {
		t.Fatalf("left in the drop folder after the uploads: %v", left)
	}
	if list, _ := b.spool.List(); len(list) != 0 {
		t.Fatalf("%d entries left in the spool", len(list))
	}
}

// TestKeyShapeClashGoesToFailedFolder: on a store that keeps objects as
// files (versitygw posix), "a/b" and "a/b/child" cannot both exist; the
// second file needs another name, so it waits in the failed folder with
// the reason instead of staying in the spool for good.
func TestKeyShapeClashGoesToFailedFolder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, storagetest.Options(b.s3))
	m1 := b.spoolBytes(t, "generic", "clash", randomBytes(10, 5))
	b.waitState(t, task.UploadTaskID(m1.ID), asynq.TaskStateCompleted)
	child := randomBytes(10, 6)
	m2 := b.spoolBytes(t, "generic", "clash/child", child)
	info := b.waitState(t, task.UploadTaskID(m2.ID), asynq.TaskStateArchived)
	kept := filepath.Join(b.failed, "generic", "clash", "child")
	if got, err := os.ReadFile(kept); err != nil || !bytes.Equal(got, child) {
		t.Fatalf("the file is not in the failed folder (%q): %v", info.LastErr, err)
	}
	if _, err := b.spool.Get(m2.ID); err == nil {
		t.Fatal("the entry is still in the spool")
	}
}

func TestQueuesServePurchasesFirst(t *testing.T) {
	t.Parallel()
	q := worker.Queues(task.UploadQueue("host-a"))
	if len(q) != 4 || q[task.QueuePurchases] != 2 || q["uploads:host-a"] != 1 || q[task.QueueWebhooks] != 1 || q[task.QueueImports] != 1 {
		t.Fatalf("Queues = %v, want purchases 2, uploads:host-a 1, webhooks 1, imports 1", q)
	}
}

// TestObjectCarriesTheRecord: every uploaded object carries, as user
// metadata, what its record holds that cannot be derived again; recording
// from that metadata (worker.RecordAsset, as `dab reconcile` does) gives the
// record the upload wrote.
func TestObjectCarriesTheRecord(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, storagetest.Options(b.s3))
	st := storagetest.Store(t, b.s3)
	ctx := context.Background()
	for i, tt := range []struct {
		typ, path string
		size      int
	}{
		{"cyoa", "forêt/NODE_café.png", 100},
		{"generic", "été/grand fichier.bin", 13<<20 + 5}, // multipart in storagetest.Options
	} {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			data := randomBytes(tt.size, uint64(100+i))
			m, err := b.spool.Put(bytes.NewReader(data), spool.Input{Type: tt.typ, Path: tt.path, Source: "test",
				Metadata: map[string]string{"price": "7", "title": "Crème brûlée & co = 100%"}})
			if err != nil {
				t.Fatal(err)
			}
			tk, _ := task.NewUpload(task.UploadPayload{SpoolID: m.ID, Type: m.Type, Key: m.Key()})
			if _, err := b.client.Enqueue(tk); err != nil {
				t.Fatal(err)
			}
			info := b.waitState(t, task.UploadTaskID(m.ID), asynq.TaskStateCompleted)
			var res task.UploadResult
			json.Unmarshal(info.Result, &res)
			rec, err := b.assets.Get(ctx, res.AssetID)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := st.Head(ctx, m.Key())
			if err != nil {
				t.Fatal(err)
			}
			om, err := obj.RecordMeta()
			if err != nil {
				t.Fatal(err)
			}
			if om.Type != rec.Type || om.Path != rec.Path || om.SHA256 != rec.SHA256 || om.Size != rec.Size ||
				om.ContentType != rec.ContentType || om.Source != rec.Source || !om.CreatedAt.Equal(rec.CreatedAt) ||
				!om.CreatedAt.Equal(m.CreatedAt) || !reflect.DeepEqual(om.Metadata, m.Metadata) {
				t.Fatalf("object says %+v, record is %+v", om, rec)
			}
			if err := b.rdb.Del(ctx, b.assets.Keys().Record(rec.ID)).Err(); err != nil {
				t.Fatal(err)
			}
			again, created, err := worker.RecordAsset(ctx, builtin.Registry(), b.assets, asset.Record{
				Type: om.Type, Path: om.Path, S3Bucket: st.Bucket(), S3Key: om.Key, Size: om.Size, SHA256: om.SHA256,
				ContentType: om.ContentType, Metadata: om.Metadata, CreatedAt: om.CreatedAt, Source: om.Source,
			})
			if err != nil || !created {
				t.Fatalf("record again: created=%v, %v", created, err)
			}
			again, _ = b.assets.Get(ctx, again.ID)
			rec.TaskID, rec.SpoolID = "", ""
			if !reflect.DeepEqual(again, rec) {
				t.Fatalf("recorded again\n%+v\nwant\n%+v", again, rec)
			}
		})
	}
}

// TestFetchersShareConcurrency: a worker runs Fetchers asynq servers whose
// concurrencies add up to Concurrency (never more servers than slots);
// tasks complete through them, and stopping the worker stops them all.
func TestFetchersShareConcurrency(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ concurrency, fetchers, servers int }{
		{10, 4, 4}, {3, 8, 3}, {5, 0, worker.FetchersDefault},
	} {
		t.Run(fmt.Sprintf("%d over %d", tc.concurrency, tc.fetchers), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			stop := b.runWith(t, func(cfg *worker.Config, _ *worker.Deps) { cfg.Concurrency, cfg.Fetchers = tc.concurrency, tc.fetchers })
			var servers []*asynq.ServerInfo
			harness.Eventually(t, 10*time.Second, "the worker's servers registered", func() bool {
				servers, _ = b.insp.Servers()
				return len(servers) == tc.servers
			}, func() string { return fmt.Sprintf("%d servers", len(servers)) })
			total := 0
			for _, s := range servers {
				total += s.Concurrency
			}
			if total != tc.concurrency {
				t.Fatalf("the servers run %d tasks at once in all, want %d", total, tc.concurrency)
			}
			var ids []string
			for i := range 40 {
				ids = append(ids, b.spoolBytes(t, "generic", fmt.Sprintf("burst/f%d.bin", i), randomBytes(100, uint64(i))).ID)
			}
			for _, id := range ids {
				b.waitState(t, task.UploadTaskID(id), asynq.TaskStateCompleted)
			}
			stop()
			harness.Eventually(t, 10*time.Second, "the servers gone", func() bool {
				servers, _ = b.insp.Servers()
				return len(servers) == 0
			}, func() string { return fmt.Sprintf("%d servers left", len(servers)) })
		})
	}
}

// TestHostileTaskPayloads: whatever a task's payload says (dot segments,
// an encoded slash, a 300-byte segment, a negative or 1e15 amount, a bidi
// character, a CR LF, a 10 MB body), the handler refuses it before any
// library sees it: the task is archived at once (SkipRetry) with the
// reason, and nothing moves (no object, no record, no balance). Another
// principal's buyer_id is not refusable here: the intake proves the buyer
// (api.Caller.Buyer), and whoever can write tasks into Redis is trusted.
func TestHostileTaskPayloads(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w, err := worker.New(b.rdb, worker.Config{Concurrency: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), FailedDir: b.failed},
		worker.Deps{Spool: b.spool, Storage: storagetest.Store(t, b.s3), Assets: b.assets, Plugins: builtin.Registry(), Ledger: ledger.New(b.rdb, "dab:", "house")})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 10<<20)
	seg := strings.Repeat("s", 300)
	const asset = "0123456789abcdef0123"
	for _, tc := range []struct {
		name, typ, payload string
	}{
		{"upload: dot segments", task.TypeUpload, `{"spool_id":"../../etc/passwd"}`},
		{"upload: encoded slash", task.TypeUpload, `{"spool_id":"..%2F..%2Fx"}`},
		{"upload: 300-byte id", task.TypeUpload, `{"spool_id":"` + seg + `"}`},
		{"upload: bidi", task.TypeUpload, `{"spool_id":"019ad5f0c2a1b2c3d4e5f6a7b8\u202e"}`},
		{"upload: 10 MB", task.TypeUpload, `{"spool_id":"` + big + `"}`},
		{"purchase: negative", task.TypePurchase, `{"purchase_id":"p1","asset_id":"` + asset + `","buyer_id":"bob","credits":-5}`},
		{"purchase: 1e15 as a float", task.TypePurchase, `{"purchase_id":"p2","asset_id":"` + asset + `","buyer_id":"bob","credits":1e15}`},
		{"purchase: 17 digits", task.TypePurchase, `{"purchase_id":"p3","asset_id":"` + asset + `","buyer_id":"bob","credits":10000000000000000}`},
		{"purchase: dot segments", task.TypePurchase, `{"purchase_id":"../p","asset_id":"` + asset + `","buyer_id":"bob","credits":1}`},
		{"purchase: encoded slash buyer", task.TypePurchase, `{"purchase_id":"p4","asset_id":"` + asset + `","buyer_id":"a%2Fb","credits":1}`},
		{"purchase: 300-byte id", task.TypePurchase, `{"purchase_id":"` + seg + `","asset_id":"` + asset + `","buyer_id":"bob","credits":1}`},
		{"purchase: bidi buyer", task.TypePurchase, `{"purchase_id":"p5","asset_id":"` + asset + `","buyer_id":"bob\u202eeve","credits":1}`},
		{"purchase: asset path", task.TypePurchase, `{"purchase_id":"p6","asset_id":"../` + asset + `","buyer_id":"bob","credits":1}`},
		{"purchase: 10 MB", task.TypePurchase, `{"purchase_id":"` + big + `","asset_id":"` + asset + `","buyer_id":"bob","credits":1}`},
		{"import: dot segments", task.TypeImport, `{"key":"k1","source":"https://example.com/a","type":"generic","path":"../../a.png"}`},
		{"import: encoded slash key", task.TypeImport, `{"key":"k2","source":"s3://partner/a/%2E%2E/b","type":"generic","path":"a%2F..%2Fb.png"}`},
		{"import: 300-byte segment", task.TypeImport, `{"key":"k3","source":"https://example.com/a","type":"generic","path":"` + seg + `.png"}`},
		{"import: bidi", task.TypeImport, `{"key":"k4","source":"https://example.com/a","type":"generic","path":"gnp.\u202eexe"}`},
		{"import: credentials", task.TypeImport, `{"key":"k5","source":"https://u:pw@example.com/a","type":"generic","path":"a.png"}`},
		{"import: 10 MB", task.TypeImport, `{"key":"k6","source":"https://example.com/a","type":"generic","path":"a.png","metadata":{"note":"` + big + `"}}`},
		{"webhook: CR LF in the event ID", task.TypeWebhook, `{"endpoint":"0123456789abcdef","event":{"id":"1-0\r\nX-Evil: 1","type":"asset.recorded"}}`},
		{"webhook: dot segments in the event ID", task.TypeWebhook, `{"endpoint":"0123456789abcdef","event":{"id":"../1-0","type":"asset.recorded"}}`},
		{"webhook: bidi type", task.TypeWebhook, `{"endpoint":"0123456789abcdef","event":{"id":"1-0","type":"asset.\u202erecorded"}}`},
	} {
		err := w.Handler().ProcessTask(context.Background(), asynq.NewTask(tc.typ, []byte(tc.payload)))
		if err == nil || !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("%s: %v, want refused for good (SkipRetry)", tc.name, clipErr(err))
		}
	}
	if n, _ := b.assets.Count(context.Background(), ""); n != 0 {
		t.Errorf("%d records after hostile payloads", n)
	}
	if keys, _ := b.rdb.Keys(context.Background(), "dab:*purchase*").Result(); len(keys) != 0 {
		t.Errorf("purchase keys after hostile payloads: %v", keys)
	}
}

// clipErr shortens an error for a test message (a 10 MB payload may be
// quoted in it).
func clipErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	s := err.Error()
	if len(s) > 300 {
		s = s[:300] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}

// TestBadPriceInSpoolGoesToFailedFolder: the intakes refuse a bad price, so
// one reaches a worker only in a spool entry written by an older dab or by
// hand. It is never recorded (nobody could buy it at a price it does not
// have, or for free): the file goes to the failed folder with the reason,
// before anything is uploaded, and the task is archived at once.
func TestBadPriceInSpoolGoesToFailedFolder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	data := randomBytes(300, 9)
	m, err := b.spool.Put(bytes.NewReader(data), spool.Input{Type: "generic", Path: "old/priced.bin", Source: "test", Metadata: map[string]string{"price": "5"}})
	if err != nil {
		t.Fatal(err)
	}
	// What an older dab wrote: the price as the uploader typed it.
	mf := filepath.Join(b.spool.Dir(), m.ID, "manifest.json")
	raw, err := os.ReadFile(mf)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc["metadata"] = map[string]string{"price": "abc"}
	raw, _ = json.Marshal(doc)
	if err := os.WriteFile(mf, raw, 0o640); err != nil {
		t.Fatal(err)
	}
	tk, _ := task.NewUpload(task.UploadPayload{SpoolID: m.ID, Type: m.Type, Key: m.Key()})
	if _, err := b.client.Enqueue(tk); err != nil {
		t.Fatal(err)
	}
	b.startWorker(t, storagetest.Options(b.s3))
	info := b.waitState(t, task.UploadTaskID(m.ID), asynq.TaskStateArchived)
	if info.Retried != 0 || !strings.Contains(info.LastErr, `price "abc"`) {
		t.Fatalf("archived after %d retries with %q", info.Retried, info.LastErr)
	}
	kept := filepath.Join(b.failed, "generic", "old", "priced.bin")
	if got, err := os.ReadFile(kept); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the file is not in the failed folder: %v", err)
	}
	note, err := os.ReadFile(kept + ".error.json")
	if err != nil || !strings.Contains(string(note), `"code": "BadPrice"`) || !strings.Contains(string(note), `price \"abc\"`) || !strings.Contains(string(note), "whole number") {
		t.Fatalf("error note = %s, %v", note, err)
	}
	if _, err := b.spool.Get(m.ID); err == nil {
		t.Fatal("the entry is still in the spool")
	}
	if _, err := b.assets.Get(context.Background(), asset.ID(b.s3.Bucket, m.Key())); !errors.Is(err, asset.ErrNotFound) {
		t.Fatalf("a record with a bad price: %v", err)
	}
	// Nothing went to the bucket: no object whose metadata holds the bad
	// price for `dab reconcile` to trip over.
	if rc, _, err := storagetest.Store(t, b.s3).Get(context.Background(), m.Key()); err == nil {
		rc.Close()
		t.Fatalf("s3://%s/%s was uploaded", b.s3.Bucket, m.Key())
	}
	if fs := b.uploadFailures(t); len(fs) != 1 || fs[0].Code != "BadPrice" || fs[0].Remedy != "new_file" {
		t.Fatalf("upload.failed events %+v, want one BadPrice", fs)
	}
}
