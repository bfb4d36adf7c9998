package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/netguard"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/worker/task"
)

// ImportMaxBytesDefault is the largest file an import fetches by default.
const ImportMaxBytesDefault int64 = 5 << 30

// errImportRefused marks import failures that no retry can fix: the task
// is archived with the reason.
var errImportRefused = errors.New("import refused")

// handleImport banks a file that is not on a dab host. An s3:// source is
// copied server-side when the store can (storage.CopyIn: conditional, with
// the SHA-256 the store computed); otherwise, and for https:// URLs
// (through netguard), the source is streamed into a temporary file while
// hashing it and stored as an upload is (conditional put with the SHA-256).
// Either way the size cap and the caller's SHA-256 are checked, and the
// type's plugin and one record follow. A run cut short starts over; the
// put and the record are idempotent, so a task that runs twice makes one
// object and one record.
func (w *Worker) handleImport(ctx context.Context, t *asynq.Task) error {
	start := time.Now()
	p, err := task.DecodeImport(t.Payload())
	if err != nil {
		return err
	}
	taskID, _ := asynq.GetTaskID(ctx)
	source := task.RedactSource(p.Source)
	log := w.log.With("task_id", taskID, "source", source)
	key, err := naming.Key(p.Type, p.Path)
	if err != nil {
		return fmt.Errorf("import: %w: %w", err, asynq.SkipRetry)
	}
	if _, ok := w.deps.Plugins.Lookup(p.Type); !ok {
		return fmt.Errorf("import: asset type %q has no plugin in this worker (known: %v): %w", p.Type, w.deps.Plugins.Types(), asynq.SkipRetry)
	}

	if err := (task.S3Sources{Buckets: w.importS3, Own: w.deps.Storage.Bucket()}).Check(p.Source); err != nil {
		return fmt.Errorf("import %s: %w: %w", source, err, asynq.SkipRetry)
	}
	created := time.Now().UTC()
	var in imported
	copied := false
	if strings.HasPrefix(p.Source, "s3://") {
		in, err = w.copyIn(ctx, p, key, created, taskID)
		if copied = !errors.Is(err, storage.ErrCopyUnsupported); !copied {
			log.Info("import.stream", "reason", err.Error())
		}
	}
	if !copied {
		in, err = w.streamIn(ctx, p, key, created)
	}
	if err != nil {
		var se *storage.Error
		if errors.Is(err, errImportRefused) || errors.Is(err, netguard.ErrRefused) || (errors.As(err, &se) && se.Permanent) {
			return fmt.Errorf("import %s: %w: %w", source, err, asynq.SkipRetry)
		}
		return fmt.Errorf("import %s: %w", source, err)
	}
	rec, recorded, err := RecordAsset(ctx, w.deps.Plugins, w.deps.Assets, asset.Record{
		Name: path.Base(p.Path), Type: p.Type, Path: p.Path, S3Bucket: in.put.Bucket, S3Key: in.put.Key,
		Size: in.put.Size, SHA256: in.put.SHA256, ContentType: in.contentType, Metadata: p.Metadata,
		CreatedAt: created, TaskID: taskID, Source: "import",
	})
	if errors.Is(err, asset.ErrBadPrice) || errors.Is(err, asset.ErrConflict) || errors.Is(err, ErrUnknownType) {
		return fmt.Errorf("import %s: %w: %w", source, err, asynq.SkipRetry)
	}
	if err != nil {
		return fmt.Errorf("import %s: %w", source, err)
	}
	if err := w.deps.Ledger.WaitReplicas(ctx, "the record of asset "+rec.ID); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	existed := in.put.Existed || !recorded
	if err := w.writeResult(ctx, t, task.UploadResult{AssetID: rec.ID, Bucket: in.put.Bucket, Key: in.put.Key, SHA256: in.put.SHA256, Existed: existed, Method: in.method}); err != nil {
		return err
	}
	log.Info("import.done", "asset_id", rec.ID, "key", in.put.Key, "bytes", in.put.Size, "existed", existed, "method", in.method,
		"duration_ms", time.Since(start).Milliseconds())
	return nil
}

// imported is what an import stored: the object, its content type and how
// the bytes got there (task.ImportCopied, ImportStaged or ImportStreamed).
type imported struct {
	put         storage.PutResult
	contentType string
	method      string
}

// copyIn copies an s3:// source server-side. storage.ErrCopyUnsupported
// means the caller should stream it instead.
func (w *Worker) copyIn(ctx context.Context, p task.ImportPayload, key string, created time.Time, taskID string) (imported, error) {
	bucket, srcKey, err := task.SplitS3(p.Source)
	if err != nil {
		return imported{}, fmt.Errorf("%w: %v", errImportRefused, err)
	}
	res, err := w.deps.Storage.CopyIn(ctx, storage.CopyInput{
		SourceBucket: bucket, SourceKey: srcKey, Key: key, StagingKey: storage.StagingKeyFor(taskID),
		MaxBytes: w.importMax, SHA256: p.SHA256,
		Describe: func(size int64, sum, sourceType string) (string, map[string]string, error) {
			ct := importContentType(sourceType, p.Path)
			meta, err := importMetadata(p, size, sum, ct, created)
			return ct, meta, err
		},
	})
	switch {
	case errors.Is(err, storage.ErrTooLarge):
		return imported{}, fmt.Errorf("%w: %v: raise DAB_IMPORT_MAX_BYTES to bank it", errImportRefused, err)
	case errors.Is(err, storage.ErrDigestMismatch):
		return imported{}, fmt.Errorf("%w: %v: check the source or the hash", errImportRefused, err)
	case errors.Is(err, storage.ErrCopyUnsupported):
		return imported{}, err
	case err != nil:
		return imported{}, sourceHint(err, bucket)
	}
	method := task.ImportCopied
	if res.Staged {
		method = task.ImportStaged
	}
	return imported{put: res.PutResult, contentType: res.ContentType, method: method}, nil
}

// streamIn streams the source into a temporary file beside the spool,
// hashing it, and stores it with a conditional put.
func (w *Worker) streamIn(ctx context.Context, p task.ImportPayload, key string, created time.Time) (imported, error) {
	tmp, err := os.CreateTemp(w.importDir, "import-*")
	if err != nil {
		return imported{}, fmt.Errorf("temporary file in %s: %w", w.importDir, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	size, sum, sourceType, err := w.fetch(ctx, p, tmp)
	if err != nil {
		return imported{}, err
	}
	if p.SHA256 != "" && p.SHA256 != sum {
		return imported{}, fmt.Errorf("%w: the source's SHA-256 is %s, the request said %s: check the source or the hash", errImportRefused, sum, p.SHA256)
	}
	ct := importContentType(sourceType, p.Path)
	meta, err := importMetadata(p, size, sum, ct, created)
	if err != nil {
		return imported{}, err
	}
	put, err := w.deps.Storage.Put(ctx, storage.PutInput{
		Key: key, File: tmp, Size: size, SHA256: sum, ContentType: ct, Metadata: meta,
	})
	if err != nil {
		return imported{}, err
	}
	return imported{put: put, contentType: ct, method: task.ImportStreamed}, nil
}

// importContentType is the source's media type, or the one the path's
// extension names when the source gave none (or only octet-stream).
func importContentType(sourceType, assetPath string) string {
	ct := ""
	if mt, _, err := mime.ParseMediaType(sourceType); err == nil {
		ct = mt
	}
	if ct == "" || ct == "application/octet-stream" {
		if byExt := mime.TypeByExtension(strings.ToLower(path.Ext(assetPath))); byExt != "" {
			ct = byExt
		}
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	return ct
}

// importMetadata is the object's record metadata for an import.
func importMetadata(p task.ImportPayload, size int64, sum, contentType string, created time.Time) (map[string]string, error) {
	meta, err := storage.EncodeMetadata(storage.ObjectMeta{
		Type: p.Type, Path: p.Path, SHA256: sum, Size: size, ContentType: contentType,
		Source: "import", CreatedAt: created, Metadata: p.Metadata,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v: import it with less metadata", errImportRefused, err)
	}
	return meta, nil
}

// sourceHint adds the likely fix to a permanent failure to read (head or
// get) an object of the source bucket.
func sourceHint(err error, bucket string) error {
	var se *storage.Error
	if errors.As(err, &se) && se.Permanent && (se.Op == "head" || se.Op == "get") && se.Bucket == bucket {
		if se.Status == http.StatusNotFound {
			return fmt.Errorf("%w (no such object or bucket: check the source)", err)
		}
		return fmt.Errorf("%w (dab's credentials must be able to read the source bucket)", err)
	}
	return err
}

// fetch copies the source into f, hashing it, up to the size cap. It
// returns the size, the hex SHA-256 and the content type the source gave.
func (w *Worker) fetch(ctx context.Context, p task.ImportPayload, f *os.File) (int64, string, string, error) {
	var (
		body        io.ReadCloser
		length      int64 = -1
		contentType string
	)
	if strings.HasPrefix(p.Source, "s3://") {
		bucket, key, err := task.SplitS3(p.Source)
		if err != nil {
			return 0, "", "", err
		}
		body, length, contentType, err = w.deps.Storage.GetFrom(ctx, bucket, key)
		if err != nil {
			return 0, "", "", sourceHint(err, bucket) // permanent ones are archived by the caller
		}
	} else {
		if w.imports == nil {
			return 0, "", "", fmt.Errorf("%w: this worker fetches no URLs", errImportRefused)
		}
		if err := w.imports.CheckURL(p.Source); err != nil {
			return 0, "", "", err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.Source, nil)
		if err != nil {
			return 0, "", "", fmt.Errorf("%w: %v", errImportRefused, netguard.RedactError(err))
		}
		resp, err := w.importClient.Do(req)
		if err != nil {
			return 0, "", "", netguard.RedactError(err)
		}
		switch {
		case resp.StatusCode == http.StatusOK:
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
			resp.Body.Close()
			return 0, "", "", fmt.Errorf("the source answered %s: trying again later", resp.Status)
		default:
			resp.Body.Close()
			return 0, "", "", fmt.Errorf("%w: the source answered %s", errImportRefused, resp.Status)
		}
		body, length, contentType = resp.Body, resp.ContentLength, resp.Header.Get("Content-Type")
	}
	defer body.Close()
	if length > w.importMax {
		return 0, "", "", fmt.Errorf("%w: the source is %d bytes, more than DAB_IMPORT_MAX_BYTES (%d)", errImportRefused, length, w.importMax)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, w.importMax+1))
	if err != nil {
		return 0, "", "", fmt.Errorf("read the source: %w", err)
	}
	if n > w.importMax {
		return 0, "", "", fmt.Errorf("%w: the source is more than DAB_IMPORT_MAX_BYTES (%d)", errImportRefused, w.importMax)
	}
	if length >= 0 && n != length {
		return 0, "", "", fmt.Errorf("the source sent %d of %d bytes: trying again", n, length)
	}
	if err := f.Sync(); err != nil {
		return 0, "", "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), contentType, nil
}

// removeImportLeftovers deletes the temporary files of imports cut short
// by a crash (their tasks start over). A file another worker on this host
// is still writing is safe to unlink: it keeps its open file.
func removeImportLeftovers(dir string) int {
	names, _ := filepath.Glob(filepath.Join(dir, "import-*"))
	n := 0
	for _, name := range names {
		if os.Remove(name) == nil {
			n++
		}
	}
	return n
}

// importDirFor is where imports stream their sources: beside the spool,
// on the disk dab was given for it.
func importDirFor(spoolDir string) string { return filepath.Join(filepath.Dir(spoolDir), "imports") }
