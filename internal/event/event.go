// Package event is dab's log of changes for other systems: one immutable
// event per change (an asset recorded, a purchase applied or rejected, a
// listing or price changed, credits granted, an upload given up), each an
// entry of one Redis stream.
//
// Events are written by the same Lua script as the change they describe
// (asset/record.lua, ledger/grant.lua, purchase.lua, offer.lua), so there is
// no event without its change and no change without its event; a script
// that changes nothing (an idempotent re-run) writes none. The one event
// that is not a Redis change, upload.failed, is written by UploadFailed,
// once per failed task and failure code.
//
// The stream entry's ID is the event's ID: monotonic, so a consumer
// resumes after the last ID it handled (GET /v1/events?after=ID, or a
// consumer group: XREADGROUP). Each entry has the fields "type", "time"
// (RFC 3339, UTC), "data" (a JSON object) and "accounts" (the accounts the
// event is about, separated by spaces, for tokens bound to an account).
package event

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Event types. Permanent once released, like task type names: consumers
// branch on them.
const (
	// TypeAssetRecorded: an asset record was created (an upload, or dab
	// reconcile rebuilding one). Data: the record as GET /v1/assets/{id}
	// shows it.
	TypeAssetRecorded = "asset.recorded"
	// TypeUploadFailed: an upload task was archived for good. Data:
	// UploadFailure (the reason and the fix).
	TypeUploadFailed = "upload.failed"
	// TypePurchaseSucceeded: a purchase moved the credits and the asset.
	// Data: purchase_id, asset_id, buyer, seller, credits, entry_id.
	TypePurchaseSucceeded = "purchase.succeeded"
	// TypePurchaseRejected: a purchase was refused and moved nothing. Data:
	// purchase_id, asset_id, buyer, credits, reason, detail.
	TypePurchaseRejected = "purchase.rejected"
	// TypeListingChanged: an owner listed an asset or took it off sale.
	// Data: asset_id, action ("set" or "clear"), credits (null when
	// cleared), owner, by, entry_id.
	TypeListingChanged = "listing.changed"
	// TypePriceChanged: the house's price of an asset nobody owns was set
	// or cleared. Data: asset_id, action, credits (null when cleared),
	// seller, by, entry_id.
	TypePriceChanged = "price.changed"
	// TypeCreditsGranted: credits were granted to an account. Data:
	// account, credits, grant_key, entry_id.
	TypeCreditsGranted = "credits.granted"
)

// Types lists every event type.
func Types() []string {
	return []string{TypeAssetRecorded, TypeUploadFailed, TypePurchaseSucceeded, TypePurchaseRejected,
		TypeListingChanged, TypePriceChanged, TypeCreditsGranted}
}

// KnownType reports whether t is one of Types.
func KnownType(t string) bool {
	for _, k := range Types() {
		if k == t {
			return true
		}
	}
	return false
}

// HashTag is the Redis Cluster hash tag of the event stream: the one of
// every asset and ledger key (asset.HashTag is this constant), so that the
// scripts that change records and balances can append to the stream.
const HashTag = "{bank}"

// Keys names the event keys.
type Keys struct{ Prefix string }

// Stream is the events stream.
func (k Keys) Stream() string { return k.Prefix + HashTag + ":events" }

// UploadFailedMark marks that the failure code of upload task taskID has
// its event already.
func (k Keys) UploadFailedMark(taskID, code string) string {
	return k.Prefix + HashTag + ":events:upload-failed:" + taskID + ":" + code
}

// Stream entry fields.
const (
	FieldType     = "type"
	FieldTime     = "time"
	FieldData     = "data"
	FieldAccounts = "accounts"
)

// Bounds of the stream's trimming (DAB_EVENTS_MAXLEN, DAB_EVENTS_MAX_AGE).
const (
	// MaxLenDefault keeps about a million events: some hundreds of MB of
	// Redis memory at most, and days to weeks of history for consumers
	// that fall behind.
	MaxLenDefault = 1_000_000
	// MaxLenMin and MaxLenMax bound Trim.MaxLen.
	MaxLenMin = 1_000
	MaxLenMax = 1_000_000_000
	// MaxAgeMin is the shortest Trim.MaxAge (0 turns the age limit off).
	MaxAgeMin = time.Minute
)

// Trim says how long the stream grows. Every append trims it to about
// MaxLen entries (XADD MAXLEN ~: Redis removes whole stream nodes, so the
// stream may hold up to about a hundred more) and, with MaxAge set, drops
// entries older than MaxAge (XTRIM MINID ~). The zero value keeps
// MaxLenDefault entries of any age.
type Trim struct {
	MaxLen int
	MaxAge time.Duration
}

// Args are the trimming arguments a script takes: the length ("~" applies)
// and the oldest ID to keep ("0": no age limit).
func (t Trim) Args(now time.Time) (maxLen int, minID string) {
	maxLen = t.MaxLen
	if maxLen <= 0 {
		maxLen = MaxLenDefault
	}
	minID = "0"
	if t.MaxAge > 0 {
		minID = strconv.FormatInt(now.Add(-t.MaxAge).UnixMilli(), 10) + "-0"
	}
	return maxLen, minID
}

// Event is one event as HTTP consumers and webhooks see it.
type Event struct {
	// ID is the stream entry's ID ("1767225600000-0"): events are ordered
	// by it; resume after the last one handled.
	ID   string          `json:"id"`
	Type string          `json:"type"`
	Time time.Time       `json:"time"`
	Data json.RawMessage `json:"data"`
}

// JSON is the event's JSON form, the body of a webhook delivery.
func (e Event) JSON() ([]byte, error) { return Marshal(e) }

// Marshal writes v as compact JSON without HTML escaping (an API, not a
// page: "<" stays readable).
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// ErrDamaged: a stream entry is not an event dab wrote.
var ErrDamaged = errors.New("damaged event")

// FromMessage reads a stream entry; accounts are the accounts the event
// is about. An entry trimmed away while it was pending in a consumer group
// comes back without fields: ErrDamaged.
func FromMessage(m redis.XMessage) (Event, []string, error) {
	get := func(k string) string { v, _ := m.Values[k].(string); return v }
	e := Event{ID: m.ID, Type: get(FieldType)}
	if e.Type == "" {
		return e, nil, fmt.Errorf("%w: entry %s has no type (trimmed, or not written by dab)", ErrDamaged, m.ID)
	}
	t, err := time.Parse(time.RFC3339Nano, get(FieldTime))
	if err != nil {
		return e, nil, fmt.Errorf("%w: entry %s: time %q is not RFC 3339", ErrDamaged, m.ID, get(FieldTime))
	}
	e.Time = t.UTC()
	data := get(FieldData)
	if !json.Valid([]byte(data)) || !strings.HasPrefix(strings.TrimSpace(data), "{") {
		return e, nil, fmt.Errorf("%w: entry %s: data is not a JSON object", ErrDamaged, m.ID)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(data)); err != nil {
		return e, nil, fmt.Errorf("%w: entry %s: %v", ErrDamaged, m.ID, err)
	}
	e.Data = compact.Bytes()
	return e, strings.Fields(get(FieldAccounts)), nil
}

var idPattern = regexp.MustCompile(`^[0-9]{1,20}(-[0-9]{1,20})?$`)

// ValidID reports whether id has the form of a stream ID ("0",
// "1767225600000" or "1767225600000-3").
func ValidID(id string) bool { return idPattern.MatchString(id) }

// ErrBadCursor: an "after" that is not a stream ID.
var ErrBadCursor = errors.New("bad event cursor")

// Log reads the events stream.
type Log struct {
	rdb  redis.UniversalClient
	keys Keys
}

// NewLog reads the stream under prefix.
func NewLog(rdb redis.UniversalClient, prefix string) *Log {
	return &Log{rdb: rdb, keys: Keys{Prefix: prefix}}
}

// Keys returns the key names.
func (l *Log) Keys() Keys { return l.keys }

// Bounds of a page.
const (
	// LimitDefault and LimitMax bound ReadOptions.Limit.
	LimitDefault = 100
	LimitMax     = 1000
	// ScanMax is the most entries one Read looks at for an account's
	// events; the page's Next moves past them, matched or not, so that a
	// consumer keeps paging without a read ever scanning the whole stream.
	ScanMax = 10_000
)

// ReadOptions select a page of events.
type ReadOptions struct {
	// After is the ID of the last event the reader has; "" or "0" reads
	// from the oldest.
	After string
	// Limit is the page size, 1 to LimitMax (LimitDefault when 0).
	Limit int
	// Account, when set, keeps only the events about that account (and
	// the assets it owns when the event happened).
	Account string
}

// Page is one page of events, oldest first.
type Page struct {
	Events []Event `json:"events"`
	// Next is the "after" of the following page: the last event of this
	// page, or, when the page is empty, the ID given (nothing newer yet)
	// or the last entry looked at for an account.
	Next string `json:"next"`
}

// Read returns the events after o.After, oldest first.
func (l *Log) Read(ctx context.Context, o ReadOptions) (Page, error) {
	if o.After == "" {
		o.After = "0"
	}
	if !ValidID(o.After) {
		return Page{}, fmt.Errorf("%w: after %q is not an event ID such as 1767225600000-0 (or 0 for the oldest)", ErrBadCursor, clip(o.After))
	}
	if o.Limit <= 0 {
		o.Limit = LimitDefault
	}
	o.Limit = min(o.Limit, LimitMax)
	page := Page{Events: []Event{}, Next: o.After}
	start, scanned := "("+o.After, 0
	for {
		batch := o.Limit - len(page.Events)
		if o.Account != "" {
			batch = min(LimitMax, ScanMax-scanned)
		}
		if batch <= 0 {
			return page, nil
		}
		msgs, err := l.rdb.XRangeN(ctx, l.keys.Stream(), start, "+", int64(batch)).Result()
		if err != nil {
			return Page{}, fmt.Errorf("event: read: %w", err)
		}
		for _, m := range msgs {
			scanned++
			e, accounts, err := FromMessage(m)
			if err != nil {
				return Page{}, err
			}
			if o.Account == "" || contains(accounts, o.Account) {
				page.Events = append(page.Events, e)
			}
			page.Next = m.ID
			if len(page.Events) == o.Limit {
				return page, nil
			}
		}
		if len(msgs) < batch {
			return page, nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// ErrNotFound: no event with that ID (never written, or trimmed).
var ErrNotFound = errors.New("event not found")

// Get reads one event.
func (l *Log) Get(ctx context.Context, id string) (Event, error) {
	if !ValidID(id) {
		return Event{}, fmt.Errorf("%w: %q is not an event ID", ErrNotFound, clip(id))
	}
	msgs, err := l.rdb.XRange(ctx, l.keys.Stream(), id, id).Result()
	if err != nil {
		return Event{}, fmt.Errorf("event: read %s: %w", id, err)
	}
	if len(msgs) != 1 || msgs[0].ID != id {
		return Event{}, fmt.Errorf("%w: %s (never written, or trimmed: DAB_EVENTS_MAXLEN, DAB_EVENTS_MAX_AGE)", ErrNotFound, id)
	}
	e, _, err := FromMessage(msgs[0])
	return e, err
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// UploadFailure is the data of an upload.failed event.
type UploadFailure struct {
	TaskID  string `json:"task_id"`
	SpoolID string `json:"spool_id"`
	// Code names the failure (an S3 error code such as AccessDenied, or
	// dab's: Conflict, SpoolChanged, UnknownType, BadPrice, ...).
	Code string `json:"code"`
	// Reason says what went wrong, Fix what to do about it.
	Reason string `json:"reason"`
	Fix    string `json:"fix"`
	// Remedy is "rerun" (the file is fine: fix the cause, then re-run the
	// task) or "new_file" (the file went to the failed folder: it must
	// change, be renamed or be put back).
	Remedy    string    `json:"remedy"`
	Type      string    `json:"type"`
	Key       string    `json:"s3_key"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	Source    string    `json:"source,omitempty"`
	SpooledAt time.Time `json:"spooled_at"`
}

// uploadFailedLua appends an upload.failed event once per failure.
//
//go:embed upload_failed.lua
var uploadFailedLua string

// Writer writes the events that are not a Redis change (upload.failed).
type Writer struct {
	rdb    redis.UniversalClient
	keys   Keys
	trim   Trim
	script *redis.Script
}

// NewWriter writes to the stream under prefix, trimmed by trim.
func NewWriter(rdb redis.UniversalClient, prefix string, trim Trim) *Writer {
	return &Writer{rdb: rdb, keys: Keys{Prefix: prefix}, trim: trim, script: redis.NewScript(uploadFailedLua)}
}

// UploadFailedMarkTTL is how long a failure's mark stays: longer than asynq
// keeps an archived task (90 days), so a re-run of an archived task that
// fails the same way again writes no second event.
const UploadFailedMarkTTL = 100 * 24 * time.Hour

// UploadFailed appends the upload.failed event of f, once per task ID and
// failure code: written=false when the failure has its event already.
func (w *Writer) UploadFailed(ctx context.Context, f UploadFailure) (id string, written bool, err error) {
	if f.TaskID == "" || f.Code == "" {
		return "", false, fmt.Errorf("event: upload.failed needs a task ID and a failure code")
	}
	data, err := Marshal(f)
	if err != nil {
		return "", false, fmt.Errorf("event: encode upload.failed: %w", err)
	}
	now := time.Now().UTC()
	maxLen, minID := w.trim.Args(now)
	res, err := w.script.Run(ctx, w.rdb, []string{w.keys.UploadFailedMark(f.TaskID, f.Code), w.keys.Stream()},
		TypeUploadFailed, now.Format(time.RFC3339Nano), string(data), "", maxLen, minID, int64(UploadFailedMarkTTL/time.Second)).StringSlice()
	if err != nil {
		return "", false, fmt.Errorf("event: write upload.failed of task %s: %w", f.TaskID, err)
	}
	return res[1], res[0] == "written", nil
}
