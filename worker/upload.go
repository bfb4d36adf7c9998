package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/plugin"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/worker/task"
)

// The spool keeps an entry's multipart upload across attempts for storage.
var _ storage.UploadState = (*spool.UploadState)(nil)

// handleUpload: spool -> S3 -> plugin -> record -> remove spool entry. Every
// step is idempotent, so a task that runs twice (a crash, a lost lease) ends
// with one object and one record.
func (w *Worker) handleUpload(ctx context.Context, t *asynq.Task) error {
	start := time.Now()
	p, err := task.DecodeUpload(t.Payload())
	if err != nil {
		return err
	}
	taskID, _ := asynq.GetTaskID(ctx)
	log := w.log.With("task_id", taskID, "spool_id", p.SpoolID)

	f, m, err := w.deps.Spool.OpenData(p.SpoolID)
	if errors.Is(err, spool.ErrNotFound) {
		// A run that finished removes the entry; if the asset was recorded
		// from it, this is a re-run of a task that already succeeded.
		if id, lerr := w.deps.Assets.BySpool(ctx, p.SpoolID); lerr == nil {
			log.Info("upload.done", "asset_id", id, "rerun", true)
			return w.writeResult(ctx, t, task.UploadResult{AssetID: id, Existed: true})
		}
		// A run that gave the file up moved it to the failed folder: an
		// operator who runs the archived task again learns where it is,
		// not that it vanished. The payload's key is only a hint, checked
		// before it names a place (spool.RejectedFile stays under the
		// failed folder).
		if typ, rel, ok := strings.Cut(p.Key, "/"); ok && w.failedDir != "" {
			if key, kerr := naming.Key(typ, rel); kerr == nil && key == p.Key {
				if where := spool.RejectedFile(w.failedDir, typ, rel, taskID); where != "" {
					return fmt.Errorf("upload: an earlier run of this task moved the file to the failed folder as %s, with the reason in %s.error.json: running the task again cannot bring it back; fix the cause, then put the file into the drop folder again (or upload it again): %w",
						where, filepath.Base(where), asynq.SkipRetry)
				}
			}
		}
		return fmt.Errorf("upload: spool entry %s is not in %s: the file was removed, or moved to the failed folder (DAB_FAILED_DIR) by an earlier run, or this worker uses another DAB_DATA_DIR or host than the producer; upload the file again: %w",
			p.SpoolID, w.deps.Spool.Dir(), asynq.SkipRetry)
	}
	if errors.Is(err, spool.ErrDataChanged) {
		// The file grew after its claim (a writer dab could not see):
		// the whole file goes to the failed folder, nothing is cut short.
		return w.fail(ctx, taskID, m, "SpoolChanged", newFile, fmt.Errorf("upload: %w", err))
	}
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	log = log.With("key", m.Key())
	// A start line helps for uploads that take a while; for small files
	// upload.done says it all, and a line more per file costs.
	level := slog.LevelDebug
	if m.Size >= startLogMin {
		level = slog.LevelInfo
	}
	log.Log(ctx, level, "upload.started", "bytes", m.Size)

	// Every intake refuses such names (spool.CheckInput), so one reaches a
	// worker only in an entry dab did not write (by hand, another
	// program). It names no key dab would upload to, nor a place in the
	// failed folder: the entry stays, marked failed, for someone to look at.
	if key, kerr := naming.Key(m.Type, m.Path); kerr != nil || key != m.Key() {
		if kerr == nil {
			kerr = fmt.Errorf("%w: not in canonical form (%q)", naming.ErrInvalid, key)
		}
		return w.fail(ctx, taskID, m, "InvalidName", fixAndRerun, fmt.Errorf("upload: spool entry %s names type %q and path %q, which dab never spools (%v): it was not written by dab; remove %s or spool the file again", m.ID, m.Type, m.Path, kerr, filepath.Join(w.deps.Spool.Dir(), m.ID)))
	}
	// Checked before the upload too: without a plugin nothing is recorded.
	if _, ok := w.deps.Plugins.Lookup(m.Type); !ok {
		return w.fail(ctx, taskID, m, "UnknownType", fixAndRerun,
			fmt.Errorf("upload: asset type %q has no plugin in this worker (known: %v): run a dab version that knows the type, then re-run the task", m.Type, w.deps.Plugins.Types()))
	}
	// Intakes refuse bad prices; one that got into the spool anyway (an
	// older dab, a hand-made entry) goes to the failed folder before it is
	// uploaded, so that no object in the bucket carries it.
	if v, ok := m.Metadata[asset.PriceMetadata]; ok {
		if _, err := asset.ParsePrice(v); err != nil {
			return w.fail(ctx, taskID, m, "BadPrice", newFile, fmt.Errorf("upload: %w: fix the price metadata and upload the file again", err))
		}
	}

	// The record's time is the spool's, so a re-run and `dab reconcile`
	// give the record the time the object carries.
	created := m.CreatedAt.UTC()
	if created.IsZero() {
		created = time.Now().UTC() // a manifest from before manifests had a time
	}
	// What the record holds that cannot be derived again goes on the object
	// too: `dab reconcile` rebuilds a record Redis lost from it.
	objMeta, err := storage.EncodeMetadata(storage.ObjectMeta{
		Type: m.Type, Path: m.Path, SHA256: m.SHA256, Size: m.Size, ContentType: m.ContentType,
		Source: m.Source, CreatedAt: created, Metadata: m.Metadata,
	})
	if err != nil {
		// The intakes refuse such metadata (storage.MetadataFits); an entry
		// spooled before they did waits in the failed folder.
		return w.fail(ctx, taskID, m, "MetadataTooLarge", newFile, fmt.Errorf("upload: %w: upload the file again with less metadata", err))
	}
	put, err := w.deps.Storage.Put(ctx, storage.PutInput{
		Key: m.Key(), File: f, Size: m.Size, SHA256: m.SHA256, ContentType: m.ContentType,
		Metadata: objMeta, State: w.deps.Spool.UploadState(m.ID),
	})
	if err != nil {
		var se *storage.Error
		if errors.As(err, &se) && w.metrics != nil && se.Code != "" {
			w.metrics.S3Errors.WithLabelValues(se.Code).Inc()
		}
		if errors.As(err, &se) && se.Permanent {
			r := fixAndRerun
			if se.NeedsNewFile {
				r = newFile
			}
			return w.fail(ctx, taskID, m, se.Code, r, fmt.Errorf("upload: %w", err))
		}
		return fmt.Errorf("upload: %w", err)
	}

	rec, recorded, err := RecordAsset(ctx, w.deps.Plugins, w.deps.Assets, asset.Record{
		Name: m.Name, Type: m.Type, Path: m.Path, S3Bucket: put.Bucket, S3Key: put.Key,
		Size: m.Size, SHA256: m.SHA256, ContentType: m.ContentType, Metadata: m.Metadata,
		CreatedAt: created, TaskID: taskID, SpoolID: m.ID, Source: m.Source,
	})
	if errors.Is(err, asset.ErrBadPrice) {
		// Checked before the upload too; here a price the record refuses
		// for another reason (a plugin's) waits in the failed folder.
		return w.fail(ctx, taskID, m, "BadPrice", newFile, fmt.Errorf("upload: %w: fix the price metadata and upload the file again", err))
	}
	if errors.Is(err, asset.ErrConflict) {
		return w.fail(ctx, taskID, m, "RecordConflict", newFile, fmt.Errorf("upload: %w: the bucket and the records disagree; inspect s3://%s/%s", err, put.Bucket, put.Key))
	}
	if errors.Is(err, ErrUnknownType) {
		return w.fail(ctx, taskID, m, "UnknownType", fixAndRerun, fmt.Errorf("upload: %w", err))
	}
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	if err := w.writeResult(ctx, t, task.UploadResult{AssetID: rec.ID, Bucket: put.Bucket, Key: put.Key, SHA256: m.SHA256, Existed: put.Existed || !recorded}); err != nil {
		return err
	}
	// With DAB_REDIS_MIN_REPLICAS the record must be on the replicas too:
	// a failover to a replica without it finds the spool entry still there
	// (queued again as an orphan) instead of losing the asset's record.
	if err := w.deps.Ledger.WaitReplicas(ctx, "the record of asset "+rec.ID); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	// Only now, with the object verified and the record committed, may the
	// spool entry go.
	if w.doneDir != "" {
		if _, err := w.deps.Spool.Archive(m.ID, w.doneDir); err != nil {
			return fmt.Errorf("upload: archive the original: %w", err)
		}
	} else if err := w.deps.Spool.RemoveOpened(m); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	if w.metrics != nil {
		result := "uploaded"
		if put.Existed || !recorded {
			result = "existed"
		} else {
			w.metrics.UploadBytes.Add(float64(m.Size))
		}
		w.metrics.Uploads.WithLabelValues(result).Inc()
		w.metrics.UploadSeconds.Observe(time.Since(start).Seconds())
	}
	log.Info("upload.done", "asset_id", rec.ID, "bytes", m.Size, "multipart", put.Multipart,
		"existed", put.Existed, "created", recorded, "duration_ms", time.Since(start).Milliseconds())
	return nil
}

// startLogMin is the size from which upload.started is logged at Info.
const startLogMin = 1 << 20

// ErrUnknownType: no plugin of this dab serves the asset's type.
var ErrUnknownType = errors.New("asset type has no plugin")

// RecordAsset records an asset whose object is in the bucket: it runs the
// plugin of r.Type (Derive), adds the derived metadata to r.Metadata (the
// caller's; a derived key wins) and records r (asset.Store.Put: idempotent,
// created=false when the record was there). The upload handler and `dab
// reconcile` both record through it, so a record rebuilt from the bucket is
// the one the upload wrote. Errors wrap ErrUnknownType, asset.ErrBadPrice or
// asset.ErrConflict where those apply; a plugin's error is worth a retry.
func RecordAsset(ctx context.Context, plugins *plugin.Registry, assets *asset.Store, r asset.Record) (asset.Record, bool, error) {
	plug, ok := plugins.Lookup(r.Type)
	if !ok {
		return r, false, fmt.Errorf("asset type %q: %w in this dab (known: %v): run a dab version that knows the type", r.Type, ErrUnknownType, plugins.Types())
	}
	if r.Name == "" {
		r.Name = path.Base(r.Path)
	}
	md := make(map[string]string, len(r.Metadata))
	for k, v := range r.Metadata {
		md[k] = v
	}
	derived, err := plug.Derive(ctx, plugin.Asset{
		Type: r.Type, Path: r.Path, Name: r.Name, Size: r.Size, SHA256: r.SHA256, ContentType: r.ContentType,
	})
	if err != nil {
		return r, false, fmt.Errorf("%s plugin: %w", r.Type, err)
	}
	for k, v := range derived {
		md[k] = v
	}
	r.Metadata = md
	return assets.Put(ctx, r)
}

// remedy is what it takes to get past a permanent upload failure. The code
// that meets the failure decides it: storage for S3's answers
// (storage.Error.NeedsNewFile), the upload handler for the spool's, the
// plugins' and the records' sentinel errors.
type remedy int

const (
	// fixAndRerun: the file is fine; configuration (credentials, bucket,
	// permissions, a plugin) must change, then the task is re-run.
	fixAndRerun remedy = iota
	// newFile: no configuration change can help; the file itself must
	// change (be renamed, or spooled again).
	newFile
)

// fail records a permanent failure and returns err so that the task is
// archived at once. With newFile the file goes to the failed folder with
// <name>.error.json beside it; with fixAndRerun the spool entry stays,
// marked failed, and an operator who fixes the cause re-runs the task. code
// names the failure in the note, the metrics and the upload.failed event.
// The event is written first, once per task and code (a re-run that fails
// the same way writes none); when it cannot be written (Redis is away) the
// task fails without SkipRetry and nothing else is done, so the retry meets
// the failure again and writes it then: no upload is given up without its
// event. The error handler logs the outcome (task.failed); fail does not
// log too.
func (w *Worker) fail(ctx context.Context, taskID string, m *spool.Manifest, code string, r remedy, err error) error {
	f := event.UploadFailure{TaskID: taskID, SpoolID: m.ID, Code: code, Reason: err.Error(), Remedy: "rerun",
		Fix:  "fix the cause the reason names (configuration, credentials, permissions, a plugin), then re-run the task: the monitor's \"run\" on the archived task",
		Type: m.Type, Key: m.Key(), Name: m.Name, Size: m.Size, SHA256: m.SHA256, Source: m.Source, SpooledAt: m.CreatedAt.UTC()}
	if r == newFile {
		f.Remedy = "new_file"
		f.Fix = fmt.Sprintf("the file itself must change: it is in the failed folder (DAB_FAILED_DIR) as %s, with %s.error.json beside it; rename it or fix it and put it back into the drop folder (or upload it again)",
			m.Key(), path.Base(m.Path))
	}
	if _, _, eerr := w.deps.Events.UploadFailed(ctx, f); eerr != nil {
		return fmt.Errorf("%w (giving it up waits until its upload.failed event can be written: %v)", err, eerr)
	}
	if w.metrics != nil {
		w.metrics.Uploads.WithLabelValues("failed").Inc()
		w.metrics.UploadFailures.WithLabelValues(code).Inc()
	}
	sf := spool.Failure{Code: code, Message: err.Error(), TaskID: taskID}
	if r == newFile {
		where, ferr := w.deps.Spool.Reject(m.ID, w.failedDir, sf)
		if ferr != nil {
			return fmt.Errorf("%w (and moving the file to the failed folder: %v): %w", err, ferr, asynq.SkipRetry)
		}
		return fmt.Errorf("%w; the file is now %s, with %s.error.json beside it: %w", err, where, filepath.Base(where), asynq.SkipRetry)
	}
	if merr := w.deps.Spool.MarkFailed(m.ID, sf); merr != nil {
		err = fmt.Errorf("%w (and marking the spool entry failed: %v)", err, merr)
	}
	return fmt.Errorf("%w; fix it and re-run the task: %w", err, asynq.SkipRetry)
}

func (w *Worker) writeResult(ctx context.Context, t *asynq.Task, r task.UploadResult) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("upload: encode result: %w", err)
	}
	if err := w.writeTaskResult(ctx, t, b); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return nil
}

// writeTaskResult writes the result of task t where asynq's ResultWriter
// writes it (the "result" field of the task's hash), in one round trip
// with the results of the tasks finishing at about the same time
// (redisbatch), where ResultWriter makes one each. The key is asynq's own
// (internal/base.TaskKey, asynq v0.26); the tests read results back
// through asynq's Inspector. As ResultWriter does, it writes nothing once
// the task's context has ended.
func (w *Worker) writeTaskResult(ctx context.Context, t *asynq.Task, b []byte) error {
	rw := t.ResultWriter()
	if rw == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write task result: %w", err)
	}
	queue, ok := asynq.GetQueueName(ctx)
	if !ok {
		if _, err := rw.Write(b); err != nil {
			return fmt.Errorf("write task result: %w", err)
		}
		return nil
	}
	if err := w.results.Batch(ctx, redis.NewIntCmd(ctx, "hset", "asynq:{"+queue+"}:t:"+rw.TaskID(), "result", b)); err != nil {
		return fmt.Errorf("write task result: %w", err)
	}
	return nil
}
