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
	"slices"
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
	b.enqueueUpload(t, m)
	return m
}

// failedWhole checks that upload task taskID was archived without a retry
// and that the failed folder holds want at key, with a note of code beside.
func (b *bundle) failedWhole(t *testing.T, taskID, key string, want []byte, code string) {
	t.Helper()
	info := b.waitState(t, taskID, asynq.TaskStateArchived)
	if info.Retried != 0 {
		t.Fatalf("archived after %d retries with %q", info.Retried, info.LastErr)
	}
	kept := filepath.Join(b.failed, filepath.FromSlash(key))
	if got, err := os.ReadFile(kept); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the whole file is not in the failed folder: %d bytes of %d, %v", len(got), len(want), err)
	}
	if note, err := os.ReadFile(kept + ".error.json"); err != nil || !strings.Contains(string(note), `"code": "`+code+`"`) {
		t.Fatalf("error note = %s, %v; want code %s", note, err, code)
	}
}

// enqueueUpload queues the upload of spool entry m.
func (b *bundle) enqueueUpload(t *testing.T, m *spool.Manifest) {
	t.Helper()
	tk, err := task.NewUpload(task.UploadPayload{SpoolID: m.ID, Type: m.Type, Key: m.Key()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Enqueue(tk); err != nil {
		t.Fatal(err)
	}
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

func TestQueues(t *testing.T) {
	t.Parallel()
	q := worker.Queues(task.UploadQueue("host-a"))
	if want := []string{task.QueuePurchases, "uploads:host-a", task.QueueImports, task.QueueWebhooks}; !slices.Equal(q, want) {
		t.Fatalf("Queues = %v, want %v", q, want)
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
			b.enqueueUpload(t, m)
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

// TestFetchersShareConcurrency: a worker runs, for each queue, Fetchers
// asynq servers that serve that queue alone and whose concurrencies add up
// to Concurrency (never more servers than slots); tasks complete through
// them, and stopping the worker stops them all.
func TestFetchersShareConcurrency(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ concurrency, fetchers, servers int }{
		{10, 4, 4}, {3, 8, 3}, {5, 0, worker.FetchersDefault},
	} {
		t.Run(fmt.Sprintf("%d over %d", tc.concurrency, tc.fetchers), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			stop := b.runWith(t, func(cfg *worker.Config, _ *worker.Deps) { cfg.Concurrency, cfg.Fetchers = tc.concurrency, tc.fetchers })
			queues := worker.Queues(task.QueueUploads)
			var servers []*asynq.ServerInfo
			harness.Eventually(t, 10*time.Second, "the worker's servers registered", func() bool {
				servers, _ = b.insp.Servers()
				return len(servers) == tc.servers*len(queues)
			}, func() string { return fmt.Sprintf("%d servers", len(servers)) })
			perQueue := map[string]int{}
			for _, s := range servers {
				if len(s.Queues) != 1 {
					t.Fatalf("a server serves %v, want one queue", s.Queues)
				}
				for q := range s.Queues {
					perQueue[q] += s.Concurrency
				}
			}
			for _, q := range queues {
				if perQueue[q] != tc.concurrency {
					t.Fatalf("the servers of %s run %d tasks at once in all, want %d (%v)", q, perQueue[q], tc.concurrency, perQueue)
				}
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
