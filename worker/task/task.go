// Package task is dab's public task contract: the task type names, payloads
// and constructors that producers (the watcher, the HTTP intake, the CLI and
// other Go systems) use to enqueue work for dab's workers.
//
// Type names are permanent once released: a worker must keep accepting every
// type name and payload version it ever accepted. Payloads are JSON; a new
// field must be optional so old producers keep working.
package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/hibiken/asynq"
)

// Task type names. Permanent: never rename or reuse one.
const (
	// TypeUpload uploads one spool entry to S3, runs its type's plugin and
	// records the asset.
	TypeUpload = "dab:upload"
)

// Queue names.
const (
	// QueueUploads carries upload tasks.
	QueueUploads = "uploads"
)

// Defaults applied by the constructors; callers may override them with
// asynq options.
const (
	// DefaultMaxRetry covers about a day of outages with the worker's backoff.
	DefaultMaxRetry = 25
	// DefaultRetention keeps a finished task (and so its ID) for a week: a
	// producer that re-enqueues within that time gets ErrTaskIDConflict, and
	// clients can read the task's result.
	DefaultRetention = 7 * 24 * time.Hour
)

// ErrBadPayload is wrapped by every decoding error. It also wraps
// asynq.SkipRetry so a handler can return it as is: a payload that does not
// decode now never will.
var ErrBadPayload = fmt.Errorf("bad task payload: %w", asynq.SkipRetry)

// UploadPayload is the payload of TypeUpload. It names a spool entry; the
// file's bytes never travel through Redis.
type UploadPayload struct {
	// SpoolID is the spool entry to upload (required).
	SpoolID string `json:"spool_id"`
	// Type and Key are informational copies from the manifest, shown by
	// monitors; the worker trusts the manifest, not these.
	Type string `json:"type,omitempty"`
	Key  string `json:"key,omitempty"`
}

var spoolIDPattern = regexp.MustCompile(`^[0-9a-f]{28}$`)

// UploadTaskID is the deterministic task ID of a spool entry's upload, so
// enqueuing the same entry twice is a no-op (asynq.ErrTaskIDConflict).
func UploadTaskID(spoolID string) string { return "upload-" + spoolID }

// NewUpload builds the upload task of a spool entry. The defaults (queue,
// task ID, retries, retention) come first so opts can override them.
func NewUpload(p UploadPayload, opts ...asynq.Option) (*asynq.Task, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("task: encode upload payload: %w", err)
	}
	base := []asynq.Option{
		asynq.TaskID(UploadTaskID(p.SpoolID)),
		asynq.Queue(QueueUploads),
		asynq.MaxRetry(DefaultMaxRetry),
		asynq.Retention(DefaultRetention),
	}
	return asynq.NewTask(TypeUpload, b, append(base, opts...)...), nil
}

// DecodeUpload reads an upload payload. Errors wrap ErrBadPayload (and so
// asynq.SkipRetry) and say what is wrong.
func DecodeUpload(b []byte) (UploadPayload, error) {
	var p UploadPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("%w: upload payload is not the JSON object {\"spool_id\": ...}: %v", ErrBadPayload, err)
	}
	if err := p.validate(); err != nil {
		return p, err
	}
	return p, nil
}

func (p UploadPayload) validate() error {
	if p.SpoolID == "" {
		return fmt.Errorf("%w: upload payload has no spool_id", ErrBadPayload)
	}
	if !spoolIDPattern.MatchString(p.SpoolID) {
		return fmt.Errorf("%w: upload payload spool_id %q is not a spool entry ID (28 lower-case hex digits)", ErrBadPayload, p.SpoolID)
	}
	return nil
}

// IsAlreadyQueued reports whether an Enqueue error means the task exists
// already (queued, running, or finished and retained): for dab's deterministic
// task IDs that is success.
func IsAlreadyQueued(err error) bool { return errors.Is(err, asynq.ErrTaskIDConflict) }
