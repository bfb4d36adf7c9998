// Package asset keeps asset records in Redis: one hash per asset, indexes by
// time and by type, written together by one Lua script so a record and its
// indexes never disagree, and idempotently so a re-run upload task never
// creates a second record.
//
// An asset's ID is derived from its bucket and key ("where it is"), so the
// same object always has the same ID however often or from wherever it is
// recorded.
package asset

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/event"
)

// Sentinel errors.
var (
	ErrNotFound  = errors.New("asset not found")
	ErrConflict  = errors.New("asset key already recorded with different content")
	ErrBadCursor = errors.New("bad page cursor")
	// ErrBadPrice: a price is not a whole number of credits from 0 to
	// CreditsMax. The same price is refused again: fix the value.
	ErrBadPrice = errors.New("bad price")
)

// CreditsMax is the largest amount of credits of one grant, purchase, price
// or listing (ledger.CreditsMax is the same constant; the ledger explains
// why it keeps every amount exact).
const CreditsMax = 1_000_000_000_000_000

// PriceMetadata is the metadata key an uploader sets an asset's price with.
const PriceMetadata = "price"

var pricePattern = regexp.MustCompile(`^(0|[1-9][0-9]{0,15})$`)

// ParsePrice reads a price as an uploader writes it (the "price" metadata,
// --meta price=10): a whole number of credits from 0 (free) to CreditsMax,
// in plain digits (no sign, space, fraction, exponent or leading zero).
// Its error wraps ErrBadPrice and says what was wrong and what to send.
func ParsePrice(s string) (int64, error) {
	fix := fmt.Sprintf("give a whole number of credits from 0 (free) to %d in plain digits, such as price=10", int64(CreditsMax))
	if !pricePattern.MatchString(s) {
		cause := "it is not a whole number in plain digits"
		switch {
		case s == "":
			cause = "it is empty"
		case strings.TrimSpace(s) != s:
			cause = "it has spaces around it"
		case strings.HasPrefix(s, "-"):
			cause = "it is negative"
		case strings.HasPrefix(s, "+"):
			cause = "it has a sign"
		case len(s) > 1 && s[0] == '0' && strings.Trim(s, "0123456789") == "":
			cause = "it has a leading zero"
		case strings.Trim(s, "0123456789") == "":
			cause = "it is larger than the maximum"
		}
		return 0, fmt.Errorf("%w: price %q: %s: %s", ErrBadPrice, clip(s), cause, fix)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > CreditsMax {
		return 0, fmt.Errorf("%w: price %q: it is larger than the maximum: %s", ErrBadPrice, clip(s), fix)
	}
	return n, nil
}

// clip shortens a value quoted in an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Record is one banked asset.
type Record struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Path        string            `json:"path"`
	S3Bucket    string            `json:"s3_bucket"`
	S3Key       string            `json:"s3_key"`
	Size        int64             `json:"size"`
	SHA256      string            `json:"sha256"`
	ContentType string            `json:"content_type"`
	Metadata    map[string]string `json:"metadata"`
	Owner       string            `json:"owner"`
	// Price is what the house sells the asset for while nobody owns it, in
	// credits: nil means unpriced (not for sale), 0 means free. Set at
	// record time from the "price" metadata (ParsePrice), then by an admin
	// through the ledger.
	Price *int64 `json:"price,omitempty"`
	// Listing is what its owner sells an owned asset for, in credits: nil
	// means not listed (not for sale), 0 means free. Only the ledger's
	// scripts change it; a sale ends it.
	Listing   *int64    `json:"listing,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	TaskID    string    `json:"task_id,omitempty"`
	SpoolID   string    `json:"spool_id,omitempty"`
	Source    string    `json:"source,omitempty"`
}

// ID derives an asset's ID from where its object is.
func ID(bucket, key string) string {
	sum := sha256.Sum256([]byte(bucket + "/" + key))
	return hex.EncodeToString(sum[:10])
}

var idPattern = regexp.MustCompile(`^[0-9a-f]{20}$`)

// ValidID reports whether id has the form ID produces.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Keys names dab's asset keys. They share one hash tag with the ledger's keys
// ({bank}), so a Redis Cluster puts them in one slot and one Lua script may
// touch a record and the balances together (a purchase sets the owner).
type Keys struct{ Prefix string }

// HashTag is the Redis Cluster hash tag of every asset and ledger key,
// and of the events stream they append to.
const HashTag = event.HashTag

func (k Keys) base() string { return k.Prefix + HashTag + ":asset:" }

// Record is the hash of one asset.
func (k Keys) Record(id string) string { return k.base() + "rec:" + id }

// ByTime is the index of all assets, newest last.
func (k Keys) ByTime() string { return k.base() + "by-time" }

// ByType is the index of the assets of one type.
func (k Keys) ByType(t string) string { return k.base() + "by-type:" + t }

// Spool links a spool entry to the asset recorded from it, so a task re-run
// after its spool entry was removed knows it already succeeded.
func (k Keys) Spool(spoolID string) string { return k.base() + "spool:" + spoolID }

// spoolLinkTTL outlives any task retention.
const spoolLinkTTL = 30 * 24 * time.Hour

// recordLua creates an asset record with its index entries and spool link,
// or finds the record that exists; its header documents KEYS, ARGV and the
// return values.
//
//go:embed record.lua
var recordLua string

// Store reads and writes asset records.
type Store struct {
	rdb    redis.UniversalClient
	keys   Keys
	events event.Keys
	opts   Options
	record *redis.Script
}

// Options are a Store's optional settings; the zero value is what NewStore
// uses.
type Options struct {
	// Events trims the events stream the record script appends
	// asset.recorded to (default: event.MaxLenDefault entries).
	Events event.Trim
}

// NewStore returns a Store using keys under prefix.
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	return NewStoreWithOptions(rdb, prefix, Options{})
}

// NewStoreWithOptions is NewStore with options. On a redisbatch.Client
// (dab's, one per process) the records of uploads made at once share
// round trips.
func NewStoreWithOptions(rdb redis.UniversalClient, prefix string, o Options) *Store {
	return &Store{rdb: rdb, keys: Keys{Prefix: prefix}, events: event.Keys{Prefix: prefix}, opts: o, record: redis.NewScript(recordLua)}
}

// Keys returns the store's key names.
func (s *Store) Keys() Keys { return s.keys }

// Put records r (r.ID is set from bucket and key). It returns the stored
// record and created=false when it was there already. A record with the same
// ID and a different SHA-256 is ErrConflict. A new record appends its
// asset.recorded event (the record as Get returns it) in the same script;
// a record that existed appends none.
//
// The price is r.Price, else the "price" metadata read by ParsePrice; a
// price that ParsePrice refuses, or a metadata price that differs from
// r.Price, is an error wrapping ErrBadPrice and nothing is recorded (the
// intakes check the price before they spool the file, so this happens only
// to a spool entry written before they did). Put never sets a listing.
func (s *Store) Put(ctx context.Context, r Record) (Record, bool, error) {
	r.ID = ID(r.S3Bucket, r.S3Key)
	price, err := priceOf(r)
	if err != nil {
		return r, false, fmt.Errorf("asset: %s: %w", r.S3Key, err)
	}
	r.Price, r.Listing = price, nil
	if r.CreatedAt.IsZero() {
		r.CreatedAt = time.Now().UTC()
	}
	if r.Metadata == nil {
		r.Metadata = map[string]string{}
	}
	md, err := json.Marshal(r.Metadata)
	if err != nil {
		return r, false, fmt.Errorf("asset: encode metadata: %w", err)
	}
	spoolKey, linkTTL := s.keys.Spool("none"), int64(0) // TTL 0: no link to write
	if r.SpoolID != "" {
		spoolKey, linkTTL = s.keys.Spool(r.SpoolID), int64(spoolLinkTTL/time.Second)
	}
	// The event's data is the record as the API shows it: what Get reads
	// back from the hash written here (the time as it parses back).
	shown := r
	shown.CreatedAt, _ = time.Parse(time.RFC3339Nano, r.CreatedAt.Format(time.RFC3339Nano))
	data, err := event.Marshal(shown)
	if err != nil {
		return r, false, fmt.Errorf("asset: encode the event: %w", err)
	}
	now := time.Now().UTC()
	maxLen, minID := s.opts.Events.Args(now)
	keys := []string{s.keys.Record(r.ID), s.keys.ByTime(), s.keys.ByType(r.Type), spoolKey, s.events.Stream()}
	args := []any{r.ID, r.SHA256, member(r.CreatedAt, r.ID), linkTTL,
		now.Format(time.RFC3339Nano), string(data), r.Owner, maxLen, minID}
	for _, kv := range [][2]string{
		{"id", r.ID}, {"name", r.Name}, {"type", r.Type}, {"path", r.Path},
		{"s3_bucket", r.S3Bucket}, {"s3_key", r.S3Key}, {"size", strconv.FormatInt(r.Size, 10)},
		{"sha256", r.SHA256}, {"content_type", r.ContentType}, {"metadata", string(md)},
		{"owner", r.Owner}, {"price", formatCredits(r.Price)}, {"created_at", r.CreatedAt.Format(time.RFC3339Nano)},
		{"task_id", r.TaskID}, {"spool_id", r.SpoolID}, {"source", r.Source},
	} {
		args = append(args, kv[0], kv[1])
	}
	res, err := s.record.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil {
		return r, false, fmt.Errorf("asset: record %s: %w", r.S3Key, err)
	}
	status, _ := res[0].(int64)
	switch status {
	case 1:
		return r, true, nil
	case 0:
		existing, err := s.Get(ctx, r.ID)
		return existing, false, err
	default:
		return r, false, fmt.Errorf("asset: %s is recorded with sha256 %v, this upload has %s: %w", r.S3Key, res[1], r.SHA256, ErrConflict)
	}
}

// priceOf is a new record's price: r.Price, else the "price" metadata.
func priceOf(r Record) (*int64, error) {
	v, has := r.Metadata[PriceMetadata]
	if r.Price != nil {
		if *r.Price < 0 || *r.Price > CreditsMax {
			return nil, fmt.Errorf("%w: price %d: give a whole number of credits from 0 (free) to %d", ErrBadPrice, *r.Price, int64(CreditsMax))
		}
		if has && v != strconv.FormatInt(*r.Price, 10) {
			return nil, fmt.Errorf("%w: the record's price %d and its price metadata %q differ: give one of them", ErrBadPrice, *r.Price, clip(v))
		}
		return r.Price, nil
	}
	if !has {
		return nil, nil
	}
	n, err := ParsePrice(v)
	if err != nil {
		return nil, err
	}
	return &n, nil
}

// formatCredits writes an optional amount as the record hash keeps it:
// "" for none, else plain digits.
func formatCredits(n *int64) string {
	if n == nil {
		return ""
	}
	return strconv.FormatInt(*n, 10)
}

// parseCredits reads an optional amount of the record hash.
func parseCredits(id, field, v string) (*int64, error) {
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("asset %s: damaged %s %q", id, field, v)
	}
	return &n, nil
}

// member is an index entry: zero-padded milliseconds then the ID, so the
// lexicographic order of a zset with equal scores is time order and the
// member itself is a stable cursor.
func member(t time.Time, id string) string {
	return fmt.Sprintf("%015d:%s", t.UnixMilli(), id)
}

// Get reads one record.
func (s *Store) Get(ctx context.Context, id string) (Record, error) {
	if !ValidID(id) {
		return Record{}, fmt.Errorf("asset: %q is not an asset ID (20 hex digits): %w", id, ErrNotFound)
	}
	m, err := s.rdb.HGetAll(ctx, s.keys.Record(id)).Result()
	if err != nil {
		return Record{}, fmt.Errorf("asset: get %s: %w", id, err)
	}
	if len(m) == 0 {
		return Record{}, fmt.Errorf("asset %s: %w", id, ErrNotFound)
	}
	return fromHash(m)
}

// BySpool returns the ID of the asset recorded from a spool entry.
func (s *Store) BySpool(ctx context.Context, spoolID string) (string, error) {
	id, err := s.rdb.Get(ctx, s.keys.Spool(spoolID)).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("asset from spool entry %s: %w", spoolID, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("asset: %w", err)
	}
	return id, nil
}

func fromHash(m map[string]string) (Record, error) {
	r := Record{
		ID: m["id"], Name: m["name"], Type: m["type"], Path: m["path"],
		S3Bucket: m["s3_bucket"], S3Key: m["s3_key"], SHA256: m["sha256"],
		ContentType: m["content_type"], Owner: m["owner"], TaskID: m["task_id"],
		SpoolID: m["spool_id"], Source: m["source"], Metadata: map[string]string{},
	}
	var err error
	if r.Size, err = strconv.ParseInt(m["size"], 10, 64); err != nil {
		return r, fmt.Errorf("asset %s: damaged size %q", r.ID, m["size"])
	}
	if r.Price, err = parseCredits(r.ID, "price", m["price"]); err != nil {
		return r, err
	}
	if r.Listing, err = parseCredits(r.ID, "listing", m["listing"]); err != nil {
		return r, err
	}
	if r.CreatedAt, err = time.Parse(time.RFC3339Nano, m["created_at"]); err != nil {
		return r, fmt.Errorf("asset %s: damaged created_at %q", r.ID, m["created_at"])
	}
	if md := m["metadata"]; md != "" {
		if err := json.Unmarshal([]byte(md), &r.Metadata); err != nil {
			return r, fmt.Errorf("asset %s: damaged metadata: %w", r.ID, err)
		}
	}
	return r, nil
}

// Page sizes of List.
const (
	ListLimitDefault = 50
	ListLimitMax     = 1000
)

// ListOptions select a page of records.
type ListOptions struct {
	// Type limits the list to one asset type; empty lists all.
	Type string
	// Cursor continues after the last record of the previous page.
	Cursor string
	// Limit is the page size, 1 to ListLimitMax (default ListLimitDefault).
	Limit int
}

// Page is one page of records, newest first.
type Page struct {
	Records []Record `json:"assets"`
	// Next is the cursor of the following page, empty on the last page.
	Next string `json:"next_cursor,omitempty"`
}

// List returns a page of records, newest first. It costs O(log N + Limit)
// however many records there are.
func (s *Store) List(ctx context.Context, o ListOptions) (Page, error) {
	if o.Limit <= 0 {
		o.Limit = ListLimitDefault
	}
	if o.Limit > ListLimitMax {
		o.Limit = ListLimitMax
	}
	index := s.keys.ByTime()
	if o.Type != "" {
		index = s.keys.ByType(o.Type)
	}
	maxBound := "+"
	if o.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(o.Cursor)
		if err != nil || !cursorPattern.Match(b) {
			return Page{}, fmt.Errorf("asset: cursor %q was not made by dab: %w", o.Cursor, ErrBadCursor)
		}
		maxBound = "(" + string(b)
	}
	members, err := s.rdb.ZRevRangeByLex(ctx, index, &redis.ZRangeBy{Max: maxBound, Min: "-", Count: int64(o.Limit)}).Result()
	if err != nil {
		return Page{}, fmt.Errorf("asset: list: %w", err)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(members))
	for i, m := range members {
		cmds[i] = pipe.HGetAll(ctx, s.keys.Record(m[len(m)-20:]))
	}
	if len(members) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return Page{}, fmt.Errorf("asset: list: %w", err)
		}
	}
	page := Page{Records: make([]Record, 0, len(members))}
	for _, c := range cmds {
		r, err := fromHash(c.Val())
		if err != nil {
			return Page{}, err
		}
		page.Records = append(page.Records, r)
	}
	if len(members) == o.Limit {
		page.Next = cursorOf(members[len(members)-1])
	}
	return page, nil
}

// CursorAfter is the cursor of the page that starts just after (older than) r.
func CursorAfter(r Record) string { return cursorOf(member(r.CreatedAt, r.ID)) }

func cursorOf(member string) string { return base64.RawURLEncoding.EncodeToString([]byte(member)) }

var cursorPattern = regexp.MustCompile(`^[0-9]{15}:[0-9a-f]{20}$`)

// Count returns the number of records, of one type or of all.
func (s *Store) Count(ctx context.Context, assetType string) (int64, error) {
	index := s.keys.ByTime()
	if assetType != "" {
		index = s.keys.ByType(assetType)
	}
	n, err := s.rdb.ZCard(ctx, index).Result()
	if err != nil {
		return 0, fmt.Errorf("asset: count: %w", err)
	}
	return n, nil
}

// Credits returns a pointer to n, for Record.Price and Record.Listing.
func Credits(n int64) *int64 { return &n }
