package intake

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/worker/task"
)

// Imports takes import requests (POST /v1/imports): it checks them at the
// edge and queues their task, whose ID comes from the idempotency key. It
// implements api.Imports.
type Imports struct {
	Queue Enqueuer
	// Tasks finds a key's earlier task, to tell a replay from another
	// request under the same key.
	Tasks *asynq.Inspector
	// Sources are the buckets s3:// imports may read.
	Sources task.S3Sources
}

var _ api.Imports = (*Imports)(nil)

// Import checks req and queues its task once per key.
func (im *Imports) Import(ctx context.Context, req api.ImportRequest) (string, bool, error) {
	p := task.ImportPayload{Key: req.Key, Source: req.Source, Type: req.Type, Path: req.Path, SHA256: req.SHA256, Metadata: req.Metadata}
	t, err := task.NewImport(p)
	if err != nil {
		return "", false, fmt.Errorf("%w: %v", api.ErrBadImport, err)
	}
	if err := im.Sources.Check(p.Source); err != nil {
		// One "import source refused" in the message, two sentinels to match.
		return "", false, fmt.Errorf("%w: %s", api.ErrImportRefused, strings.TrimPrefix(err.Error(), task.ErrSourceRefused.Error()+": "))
	}
	if v, ok := p.Metadata[asset.PriceMetadata]; ok {
		if _, err := asset.ParsePrice(v); err != nil {
			return "", false, fmt.Errorf("%w: metadata price: %v", api.ErrBadImport, err)
		}
	}
	// What goes on the object must fit S3's metadata limit (the size and
	// hash are not known yet: the longest they can be is counted).
	if _, err := storage.EncodeMetadata(storage.ObjectMeta{Type: p.Type, Path: p.Path, SHA256: strings.Repeat("0", 64),
		Size: 1 << 62, ContentType: "application/octet-stream", Source: "import", Metadata: p.Metadata}); err != nil {
		return "", false, fmt.Errorf("%w: %v", api.ErrBadImport, err)
	}
	id := task.ImportTaskID(p.Key)
	_, err = im.Queue.EnqueueContext(ctx, t)
	if task.IsAlreadyQueued(err) {
		if im.Tasks != nil {
			if info, ierr := im.Tasks.GetTaskInfo(task.QueueImports, id); ierr == nil && !bytes.Equal(info.Payload, t.Payload()) {
				return id, false, api.ErrImportConflict
			}
		}
		return id, true, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("the import could not be queued: %w", err)
	}
	return id, false, nil
}
