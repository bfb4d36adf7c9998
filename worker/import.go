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

// handleImport banks a file that is not on a dab host: it streams the
// source (an object of another bucket, or an https:// URL through
// netguard) into a temporary file while hashing it, checks the size cap and
// the SHA-256 the caller gave, then stores and records it as an upload
// does (conditional put with the SHA-256, the type's plugin, one record).
// A run cut short starts over; the put and the record are idempotent, so
// a task that runs twice makes one object and one record.
func (w *Worker) handleImport(ctx context.Context, t *asynq.Task) error {
	start := time.Now()
	p, err := task.DecodeImport(t.Payload())
	if err != nil {
		return err
	}
	taskID, _ := asynq.GetTaskID(ctx)
	source := netguard.Redact(p.Source)
	log := w.log.With("task_id", taskID, "source", source)
	key, err := naming.Key(p.Type, p.Path)
	if err != nil {
		return fmt.Errorf("import: %w: %w", err, asynq.SkipRetry)
	}
	if _, ok := w.deps.Plugins.Lookup(p.Type); !ok {
		return fmt.Errorf("import: asset type %q has no plugin in this worker (known: %v): %w", p.Type, w.deps.Plugins.Types(), asynq.SkipRetry)
	}

	tmp, err := os.CreateTemp(w.importDir, "import-*")
	if err != nil {
		return fmt.Errorf("import: temporary file in %s: %w", w.importDir, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	size, sum, contentType, err := w.fetch(ctx, p, tmp)
	if errors.Is(err, errImportRefused) || errors.Is(err, netguard.ErrRefused) {
		return fmt.Errorf("import %s: %w: %w", source, err, asynq.SkipRetry)
	}
	if err != nil {
		return fmt.Errorf("import %s: %w", source, err)
	}
	if p.SHA256 != "" && p.SHA256 != sum {
		return fmt.Errorf("import %s: the source's SHA-256 is %s, the request said %s: check the source or the hash: %w", source, sum, p.SHA256, asynq.SkipRetry)
	}
	if contentType == "" || contentType == "application/octet-stream" {
		if byExt := mime.TypeByExtension(strings.ToLower(path.Ext(p.Path))); byExt != "" {
			contentType = byExt
		}
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	created := time.Now().UTC()
	objMeta, err := storage.EncodeMetadata(storage.ObjectMeta{
		Type: p.Type, Path: p.Path, SHA256: sum, Size: size, ContentType: contentType,
		Source: "import", CreatedAt: created, Metadata: p.Metadata,
	})
	if err != nil {
		return fmt.Errorf("import %s: %w: import it with less metadata: %w", source, err, asynq.SkipRetry)
	}
	put, err := w.deps.Storage.Put(ctx, storage.PutInput{
		Key: key, File: tmp, Size: size, SHA256: sum, ContentType: contentType, Metadata: objMeta,
	})
	if err != nil {
		var se *storage.Error
		if errors.As(err, &se) && se.Permanent {
			return fmt.Errorf("import %s: %w: %w", source, err, asynq.SkipRetry)
		}
		return fmt.Errorf("import %s: %w", source, err)
	}
	rec, recorded, err := RecordAsset(ctx, w.deps.Plugins, w.deps.Assets, asset.Record{
		Name: path.Base(p.Path), Type: p.Type, Path: p.Path, S3Bucket: put.Bucket, S3Key: put.Key,
		Size: size, SHA256: sum, ContentType: contentType, Metadata: p.Metadata,
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
	if err := w.writeResult(t, task.UploadResult{AssetID: rec.ID, Bucket: put.Bucket, Key: put.Key, SHA256: sum, Existed: put.Existed || !recorded}); err != nil {
		return err
	}
	log.Info("import.done", "asset_id", rec.ID, "key", put.Key, "bytes", size, "existed", put.Existed || !recorded,
		"duration_ms", time.Since(start).Milliseconds())
	return nil
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
			var se *storage.Error
			if errors.As(err, &se) && se.Permanent {
				return 0, "", "", fmt.Errorf("%w: %v (dab's credentials must be able to read the source bucket)", errImportRefused, err)
			}
			return 0, "", "", err
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
			return 0, "", "", fmt.Errorf("%w: %v", errImportRefused, err)
		}
		resp, err := w.importClient.Do(req)
		if err != nil {
			return 0, "", "", err
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
	if mt, _, err := mime.ParseMediaType(contentType); err == nil {
		contentType = mt
	} else {
		contentType = ""
	}
	return n, hex.EncodeToString(h.Sum(nil)), contentType, nil
}

// importDirFor is where imports stream their sources: beside the spool,
// on the disk dab was given for it.
func importDirFor(spoolDir string) string { return filepath.Join(filepath.Dir(spoolDir), "imports") }
