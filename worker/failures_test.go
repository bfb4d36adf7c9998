// Uploads that cannot succeed as they are: a name taken, a store that
// refuses, a missing or grown spool entry, a key the store cannot hold, a
// bad price, hostile payloads. What retrying cannot mend is archived at
// once, the file kept whole in the failed folder with its reason beside it
// and nothing recorded, until someone fixes it and runs the task again.

package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
	"github.com/dab-assets/dab/worker"
	"github.com/dab-assets/dab/worker/task"
)

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
	// An operator runs the archived task again (the monitor's "run"): it
	// says where the file is, not that it vanished.
	if err := b.insp.RunTask(task.QueueUploads, task.UploadTaskID(m2.ID)); err != nil {
		t.Fatal(err)
	}
	again := b.pollTask(t, task.QueueUploads, task.UploadTaskID(m2.ID), "archived again", func(i *asynq.TaskInfo) bool {
		return i.State == asynq.TaskStateArchived && i.LastErr != info.LastErr
	})
	if !strings.Contains(again.LastErr, "an earlier run of this task moved the file to the failed folder as "+kept) ||
		!strings.Contains(again.LastErr, "put the file into the drop folder again") || strings.Contains(again.LastErr, "is not in") {
		t.Fatalf("re-run error = %q, want where the file is", again.LastErr)
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
	b.enqueueUpload(t, m)
	b.startWorker(t, storagetest.Options(b.s3))
	b.failedWhole(t, task.UploadTaskID(m.ID), "generic/grew.bin", append(data, more...), "SpoolChanged")
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
	b.enqueueUpload(t, grew)
	b.enqueueUpload(t, same)
	b.startWorker(t, storagetest.Options(b.s3))

	b.failedWhole(t, task.UploadTaskID(grew.ID), "generic/grew.bin", append(data, more...), "SpoolChanged")

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
	b.editManifest(t, m.ID, "metadata", map[string]string{"price": "abc"})
	b.enqueueUpload(t, m)
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

// editManifest sets field of entry id's manifest to v, as a spool entry
// written by hand or by another program would have it.
func (b *bundle) editManifest(t *testing.T, id, field string, v any) {
	t.Helper()
	mf := filepath.Join(b.spool.Dir(), id, "manifest.json")
	raw, err := os.ReadFile(mf)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc[field] = v
	raw, _ = json.Marshal(doc)
	if err := os.WriteFile(mf, raw, 0o640); err != nil {
		t.Fatal(err)
	}
}

// TestHostileNamesInSpoolAreNeverUploaded: a spool entry whose manifest
// names a type or path no intake accepts (written by hand or by another
// program: "..", an absolute path, a bidi character, a 300-byte name, a
// path not in canonical form) is never uploaded and never moved by its
// name: the task is archived at once, the entry stays, marked failed, and
// nothing lands in the bucket or outside the failed folder.
func TestHostileNamesInSpoolAreNeverUploaded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, storagetest.Options(b.s3))
	for _, tt := range []struct{ field, value string }{
		{"path", "../../escape.bin"},
		{"path", "/etc/escape.bin"},
		{"path", "a/\u202eevil.bin"},
		{"path", strings.Repeat("x", 300) + ".bin"},
		{"path", "a//b.bin"},
		{"path", "cafe\u0301.bin"},
		{"type", "../generic"},
	} {
		t.Run(tt.field+" "+tt.value, func(t *testing.T) {
			m, err := b.spool.Put(bytes.NewReader([]byte("hostile")), spool.Input{Type: "generic", Path: "fine.bin", Source: "test"})
			if err != nil {
				t.Fatal(err)
			}
			b.editManifest(t, m.ID, tt.field, tt.value)
			b.enqueueUpload(t, m)
			info := b.waitState(t, task.UploadTaskID(m.ID), asynq.TaskStateArchived)
			if info.Retried != 0 || !strings.Contains(info.LastErr, "it was not written by dab") {
				t.Fatalf("archived after %d retries with %q", info.Retried, info.LastErr)
			}
			if f, ok, _ := b.spool.FailureMark(m.ID); !ok || f.Code != "InvalidName" {
				t.Fatalf("entry's failure mark = %+v, %v; want the entry kept, marked InvalidName", f, ok)
			}
			var keys []string
			storagetest.Store(t, b.s3).List(context.Background(), "", func(o storage.ObjectInfo) error {
				keys = append(keys, o.Key)
				return nil
			})
			for _, k := range keys {
				if strings.Contains(k, "escape") || strings.Contains(k, "evil") || strings.Contains(k, "xxxx") || strings.Contains(k, "cafe") || strings.Contains(k, "fine.bin") {
					t.Fatalf("s3://%s/%s was uploaded", b.s3.Bucket, k)
				}
			}
		})
	}
	if des, _ := os.ReadDir(filepath.Dir(b.failed)); len(des) > 1 {
		var names []string
		for _, de := range des {
			names = append(names, de.Name())
		}
		t.Fatalf("beside the failed folder: %v", names)
	}
}
