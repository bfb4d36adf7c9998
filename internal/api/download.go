package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/storage"
)

// Presigner makes presigned GET URLs of objects; *storage.Presigner is one.
type Presigner interface {
	GetURL(ctx context.Context, bucket, key string, o storage.URLOptions) (storage.SignedURL, error)
	Origin() string
}

// Errors of Downloads callers branch on.
var (
	// ErrNoDownloads: the server has no bucket to presign for.
	ErrNoDownloads = errors.New("downloads are not configured")
	// ErrNoPreview: the asset is not an image a browser shows inline.
	ErrNoPreview = errors.New("no preview for this type")
)

// Downloads hands out short-lived presigned URLs of assets' objects, so
// the bytes go from the store to whoever may have them and never through
// dab. It checks no permission: the download route allows owners and
// admins (MayDownload), the console shows image previews to anyone who
// may see the asset. A nil *Downloads (no bucket configured) makes none.
type Downloads struct {
	presigner Presigner
	ttl       time.Duration
}

// NewDownloads returns Downloads whose URLs live for ttl (DAB_DOWNLOAD_TTL).
func NewDownloads(p Presigner, ttl time.Duration) *Downloads {
	return &Downloads{presigner: p, ttl: ttl}
}

// URL presigns a GET of rec's object: to save it under the asset's name,
// or, with inline, to show it (with the record's content type). The URL
// is a bearer credential until it expires: hand it only to whom the
// caller allowed, and never log it.
func (d *Downloads) URL(ctx context.Context, rec asset.Record, inline bool) (storage.SignedURL, error) {
	if d == nil || d.presigner == nil {
		return storage.SignedURL{}, ErrNoDownloads
	}
	o := storage.URLOptions{TTL: d.ttl, Filename: rec.Name, Inline: inline}
	if inline {
		o.ContentType = rec.ContentType
	}
	return d.presigner.GetURL(ctx, rec.S3Bucket, rec.S3Key, o)
}

// PreviewURL is an inline URL for an <img> of rec, for images only
// (Previewable); other types get ErrNoPreview.
func (d *Downloads) PreviewURL(ctx context.Context, rec asset.Record) (string, error) {
	if d == nil || d.presigner == nil {
		return "", ErrNoDownloads
	}
	if !Previewable(rec) {
		return "", fmt.Errorf("%w: %q", ErrNoPreview, rec.ContentType)
	}
	su, err := d.URL(ctx, rec, true)
	return su.URL, err
}

// Origin is scheme://host[:port] of the URLs, for the console's
// Content-Security-Policy (img-src); empty without a bucket.
func (d *Downloads) Origin() string {
	if d == nil || d.presigner == nil {
		return ""
	}
	return d.presigner.Origin()
}

// previewTypes are the raster formats browsers render in an <img>. SVG is
// left out: opened on its own, an SVG runs scripts (on the store's origin).
var previewTypes = map[string]bool{
	"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true, "image/avif": true, "image/bmp": true,
}

// Previewable reports whether the console may show rec inline as an image.
func Previewable(rec asset.Record) bool {
	mt, _, err := mime.ParseMediaType(rec.ContentType)
	return err == nil && previewTypes[mt]
}

// MayDownload reports whether the caller may download an asset owned by
// owner: an admin always; otherwise only a token bound to the owning
// account. An asset nobody owns yet belongs to the house: admin only.
func (c Caller) MayDownload(owner string) bool {
	if c.Scopes[ScopeAdmin] {
		return true
	}
	return owner != "" && c.ActsFor(owner)
}

// AssetReader reads asset records; *asset.Store is one.
type AssetReader interface {
	Get(ctx context.Context, id string) (asset.Record, error)
}

// DownloadDeps are what the download route needs.
type DownloadDeps struct {
	Assets AssetReader
	// Downloads makes the URLs; nil (no bucket configured) answers 503.
	Downloads *Downloads
	// Log receives one line per download and refusal; nil: the server's.
	Log *slog.Logger
}

// RegisterDownload adds GET /v1/assets/{id}/download: 302 to a presigned
// URL of the asset's object for its owner or an admin.
func RegisterDownload(s *Server, d DownloadDeps) {
	if d.Log == nil {
		d.Log = s.log
	}
	s.HandleFunc(http.MethodGet, "/v1/assets/{id}/download", ScopeRead, d.download)
}

// DownloadAnswer is the body of the 302 (the URL is also its Location),
// for clients that do not follow redirects.
type DownloadAnswer struct {
	URL     string    `json:"url"`
	Expires time.Time `json:"expires_at"`
}

func (d DownloadDeps) download(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	// The ID reaches Redis only in the form dab makes.
	if !asset.ValidID(id) {
		WriteError(w, http.StatusNotFound, "asset_not_found", fmt.Sprintf("%s is not an asset ID (20 hex digits, as `dab assets list` shows)", quoteClipped(id)))
		return
	}
	c, _ := CallerOf(r.Context())
	rec, err := d.Assets.Get(r.Context(), id)
	if errors.Is(err, asset.ErrNotFound) {
		WriteError(w, http.StatusNotFound, "asset_not_found", "no asset "+strconv.Quote(id))
		return
	}
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	if !c.MayDownload(rec.Owner) {
		d.Log.Info("asset.download_refused", "asset_id", id, "account", c.Account, "caller", c.Name, "owner", rec.Owner)
		WriteError(w, http.StatusForbidden, "not_owner", notOwnerMessage(c, rec))
		return
	}
	su, err := d.Downloads.URL(r.Context(), rec, false)
	if errors.Is(err, ErrNoDownloads) {
		WriteError(w, http.StatusServiceUnavailable, "downloads_unavailable", "this server has no bucket configured: downloads need AWS_S3_BUCKET (and the store's settings) on the server")
		return
	}
	if err != nil {
		d.Log.Error("asset.download_failed", "asset_id", id, "account", c.Account, "error", err.Error())
		WriteError(w, http.StatusServiceUnavailable, "store_unavailable", "cannot sign a download URL (the server's S3 credentials are unavailable); the log has the details")
		return
	}
	// Only where the URL leads is logged: its query is the signature.
	d.Log.Info("asset.download", "asset_id", id, "account", c.Account, "caller", c.Name, "s3_key", rec.S3Key, "expires_at", su.Expires.UTC())
	h := w.Header()
	h.Set("Location", su.URL)
	h.Set("Cache-Control", "no-store")
	// The page that asked must not pass the URL on as a Referer.
	h.Set("Referrer-Policy", "no-referrer")
	WriteJSON(w, http.StatusFound, DownloadAnswer{URL: su.URL, Expires: su.Expires.UTC()})
}

func notOwnerMessage(c Caller, rec asset.Record) string {
	if rec.Owner == "" {
		return fmt.Sprintf("asset %s has no owner: only an admin may download it (buy it to own it)", rec.ID)
	}
	msg := fmt.Sprintf("only the owner of asset %s (account %q) or an admin may download it", rec.ID, rec.Owner)
	if c.Account != "" {
		return msg + fmt.Sprintf("; this token acts as %q", c.Account)
	}
	return msg + "; this token is bound to no account (bind one in DAB_TOKENS_FILE: read@" + rec.Owner + " TOKEN)"
}

// quoteClipped quotes a value from a request for an error message,
// shortened so a long one cannot fill the answer.
func quoteClipped(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return strconv.Quote(strings.ToValidUTF8(s, "?"))
}
