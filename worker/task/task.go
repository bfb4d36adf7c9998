// Package task is dab's public task contract: the task type names, payloads
// and constructors that producers (the watcher, the HTTP intake, the CLI and
// other Go systems) use to enqueue work for dab's workers.
//
// Type names are permanent once released: a worker must keep accepting every
// type name and payload version it ever accepted. Payloads are JSON; a new
// field must be optional so old producers keep working.
package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/spool"
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

// UploadResult is the result an upload task writes (asynq's task result):
// the monitor shows it and clients that follow the task read the asset ID
// from it. Its JSON names are permanent, like the payload's.
type UploadResult struct {
	AssetID string `json:"asset_id"`
	Bucket  string `json:"s3_bucket"`
	Key     string `json:"s3_key"`
	SHA256  string `json:"sha256"`
	// Existed is true when the object or record was there already (a re-run).
	Existed bool `json:"existed"`
	// Method says how an import's bytes reached the store (ImportCopied,
	// ImportStaged or ImportStreamed); empty for uploads.
	Method string `json:"method,omitempty"`
}

// UploadQueue is the queue of the upload tasks of files spooled on host: a
// spool is local to its host, so only that host's workers can upload them.
// An empty host means a spool on shared storage: the one QueueUploads.
func UploadQueue(host string) string {
	if host == "" {
		return QueueUploads
	}
	return QueueUploads + ":" + host
}

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
	if !spool.ValidID(p.SpoolID) {
		return fmt.Errorf("%w: upload payload spool_id %q is not a spool entry ID (28 lower-case hex digits)", ErrBadPayload, p.SpoolID)
	}
	return nil
}

// IsAlreadyQueued reports whether an Enqueue error means the task exists
// already (queued, running, or finished and retained): for dab's deterministic
// task IDs that is success.
func IsAlreadyQueued(err error) bool { return errors.Is(err, asynq.ErrTaskIDConflict) }

// TypePurchase applies one purchase to the ledger (permanent name).
const TypePurchase = "dab:purchase"

// QueuePurchases carries purchase tasks; workers serve it before uploads.
const QueuePurchases = "purchases"

// PurchasePayload is the payload of TypePurchase. PurchaseID is the
// idempotency key and, prefixed, the task ID.
type PurchasePayload struct {
	PurchaseID string `json:"purchase_id"`
	AssetID    string `json:"asset_id"`
	BuyerID    string `json:"buyer_id"`
	Credits    int64  `json:"credits"`
}

// PurchaseTaskID is the task ID of a purchase, so sending a purchase twice
// queues it once.
func PurchaseTaskID(purchaseID string) string { return "purchase-" + purchaseID }

// NewPurchase builds the task of a purchase. The ledger validates the
// fields when the task runs (and stores a clear rejection); here only the
// shape is checked.
func NewPurchase(p PurchasePayload, opts ...asynq.Option) (*asynq.Task, error) {
	if p.PurchaseID == "" || p.AssetID == "" || p.BuyerID == "" || p.Credits < 0 {
		return nil, fmt.Errorf("%w: a purchase needs purchase_id, asset_id, buyer_id and credits >= 0 (0: a free asset)", ErrBadPayload)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("task: encode purchase payload: %w", err)
	}
	base := []asynq.Option{
		asynq.TaskID(PurchaseTaskID(p.PurchaseID)),
		asynq.Queue(QueuePurchases),
		asynq.MaxRetry(DefaultMaxRetry),
		asynq.Retention(DefaultRetention),
	}
	return asynq.NewTask(TypePurchase, b, append(base, opts...)...), nil
}

// DecodePurchase reads a purchase payload; errors wrap ErrBadPayload.
func DecodePurchase(b []byte) (PurchasePayload, error) {
	var p PurchasePayload
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("%w: purchase payload is not the JSON object {\"purchase_id\", \"asset_id\", \"buyer_id\", \"credits\"}: %v", ErrBadPayload, err)
	}
	if p.PurchaseID == "" || p.AssetID == "" || p.BuyerID == "" || p.Credits < 0 {
		return p, fmt.Errorf("%w: purchase payload needs purchase_id, asset_id, buyer_id and credits >= 0", ErrBadPayload)
	}
	return p, nil
}

// Enqueuer is the part of *asynq.Client that queues tasks.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// EnqueueUpload queues the upload of spool entry m on queue. The task ID
// comes from the spool ID, so queueing an entry again is not an error:
// queued reports whether this call made the task (false: it existed).
func EnqueueUpload(ctx context.Context, q Enqueuer, m *spool.Manifest, queue string) (queued bool, err error) {
	t, err := NewUpload(UploadPayload{SpoolID: m.ID, Type: m.Type, Key: m.Key()}, asynq.Queue(queue))
	if err != nil {
		return false, err
	}
	if _, err := q.EnqueueContext(ctx, t); err != nil {
		if IsAlreadyQueued(err) {
			return false, nil
		}
		return false, fmt.Errorf("queue upload of spool entry %s: %w", m.ID, err)
	}
	return true, nil
}

// TypeWebhook delivers one event to one webhook endpoint (permanent name).
const TypeWebhook = "dab:webhook"

// QueueWebhooks carries webhook deliveries.
const QueueWebhooks = "webhooks"

// WebhookMaxRetry is how often a failed delivery is tried again: the
// worker's schedule for webhooks (first after about 5 s, then growing) adds
// up to about a day; then the task is archived (visible in the monitor,
// sent again from the console).
const WebhookMaxRetry = 11

// WebhookPayload is the payload of TypeWebhook: the event itself, so that
// a delivery does not depend on the stream still holding it, and the
// endpoint's ID (never its URL or secret, which stay in DAB_WEBHOOKS_FILE).
type WebhookPayload struct {
	// Endpoint is the endpoint's ID (webhook.EndpointID of its URL).
	Endpoint string `json:"endpoint"`
	// Event is the event's JSON, sent as the body as it is.
	Event json.RawMessage `json:"event"`
}

// webhookEvent is the part of an event a delivery task reads.
// eventType is the shape of dab's event types (asset.recorded, ...).
var eventType = regexp.MustCompile(`^[a-z]+(\.[a-z_]+)+$`)

// clip shortens what a payload said for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

type webhookEvent struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// WebhookTaskID is the task ID of an event's delivery to an endpoint, so
// the dispatcher queues it once however often it sees the event.
func WebhookTaskID(eventID, endpointID string) string {
	return "webhook-" + eventID + "-" + endpointID
}

// NewWebhook builds the delivery of an event to an endpoint, with the task
// ID WebhookTaskID. The defaults (queue, task ID, retries, retention) come
// first so opts can override them (a resend gives another task ID).
func NewWebhook(p WebhookPayload, opts ...asynq.Option) (*asynq.Task, error) {
	ev, err := p.decode()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("task: encode webhook payload: %w", err)
	}
	base := []asynq.Option{
		asynq.TaskID(WebhookTaskID(ev.ID, p.Endpoint)),
		asynq.Queue(QueueWebhooks),
		asynq.MaxRetry(WebhookMaxRetry),
		asynq.Retention(DefaultRetention),
	}
	return asynq.NewTask(TypeWebhook, b, append(base, opts...)...), nil
}

// DecodeWebhook reads a webhook payload and the ID and type of its event;
// errors wrap ErrBadPayload.
func DecodeWebhook(b []byte) (p WebhookPayload, eventID, eventType string, err error) {
	if err := json.Unmarshal(b, &p); err != nil {
		return p, "", "", fmt.Errorf("%w: webhook payload is not the JSON object {\"endpoint\", \"event\"}: %v", ErrBadPayload, err)
	}
	ev, err := p.decode()
	return p, ev.ID, ev.Type, err
}

func (p WebhookPayload) decode() (webhookEvent, error) {
	var ev webhookEvent
	if p.Endpoint == "" || len(p.Event) == 0 {
		return ev, fmt.Errorf("%w: a webhook delivery needs endpoint and event", ErrBadPayload)
	}
	if err := json.Unmarshal(p.Event, &ev); err != nil || ev.ID == "" || ev.Type == "" {
		return ev, fmt.Errorf("%w: the webhook payload's event is not an event with an id and a type", ErrBadPayload)
	}
	// The ID and type go into headers and logs: a CR LF or a bidi
	// character must stop here, not be retried against the endpoint for a day.
	if !event.ValidID(ev.ID) || !eventType.MatchString(ev.Type) {
		return ev, fmt.Errorf("%w: the webhook payload's event has the id %q and the type %q: an event ID is a stream ID such as 1767225600000-0, a type such as asset.recorded", ErrBadPayload, clip(ev.ID), clip(ev.Type))
	}
	return ev, nil
}
