package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

const (
	aliceTok = "alice-read-token-0123456"
	bobTok   = "bob-read-token-012345678"
	ingestT  = "ingest-only-token-012345"
)

// countingAssets counts the records read, so a test can tell that a
// malformed ID never reached Redis.
type countingAssets struct {
	*asset.Store
	gets atomic.Int64
}

func (c *countingAssets) Get(ctx context.Context, id string) (asset.Record, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, id)
}

// randomFile makes a file of n random bytes and returns it open, with its
// hex SHA-256.
func randomFile(t *testing.T, n int) (*os.File, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	sum := sha256.Sum256(b)
	return f, hex.EncodeToString(sum[:])
}

// downloadBundle is a dab API with the download route on a real
// redis-server and versitygw, with two assets: alice's and an unowned one.
type downloadBundle struct {
	srv       *httptest.Server
	assets    *countingAssets
	downloads *Downloads
	log       *harness.LogBuffer
	owned     asset.Record
	unowned   asset.Record
	text      asset.Record
	sums      map[string]string // asset ID -> SHA-256 of its bytes
}

func setupDownloads(t *testing.T) *downloadBundle {
	t.Helper()
	ctx := context.Background()
	s3srv := harness.StartS3(t)
	c := storagetest.Options(s3srv)
	client := storagetest.Client(t, c)
	st := storage.New(client, c)
	assets := &countingAssets{Store: asset.NewStore(harness.RedisClient(t, harness.Redis(t)), "dl:")}
	b := &downloadBundle{assets: assets, log: &harness.LogBuffer{}, sums: map[string]string{}}
	put := func(key, name, owner, ctype string, size int) asset.Record {
		f, sum := randomFile(t, size)
		if _, err := st.Put(ctx, storage.PutInput{Key: key, File: f, Size: int64(size), SHA256: sum, ContentType: ctype}); err != nil {
			t.Fatal(err)
		}
		rec, _, err := assets.Put(ctx, asset.Record{Name: name, Type: "generic", Path: name, S3Bucket: c.Bucket, S3Key: key,
			Size: int64(size), SHA256: sum, ContentType: ctype, Owner: owner})
		if err != nil {
			t.Fatal(err)
		}
		b.sums[rec.ID] = sum
		return rec
	}
	b.owned = put("generic/alice.png", "alice.png", "alice", "image/png", 70_000)
	b.unowned = put("generic/house.png", "house.png", "", "image/png", 1234)
	b.text = put("generic/notes.txt", "notes.txt", "alice", "text/plain", 10)

	ps, err := storage.NewPresigner(s3.NewPresignClient(client), c.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	b.downloads = NewDownloads(ps, time.Minute)
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("read@alice "+aliceTok+"\nread@bob "+bobTok+"\nread "+readTok+"\ningest "+ingestT+"\n"), 0o600)
	tokens, err := LoadTokens(adminTok, file)
	if err != nil {
		t.Fatal(err)
	}
	s := New(tokens, false, slog.New(slog.NewJSONHandler(b.log, nil)))
	RegisterDownload(s, DownloadDeps{Assets: assets, Downloads: b.downloads})
	b.srv = httptest.NewServer(s.Handler())
	t.Cleanup(b.srv.Close)
	return b
}

// get asks for a download without following the redirect.
func (b *downloadBundle) get(t *testing.T, id, tok string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.srv.URL+"/v1/assets/"+id+"/download", nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// TestDownloadMatrix: the owner's bound token and admin get a presigned URL
// that fetches the exact bytes; another account, an unbound read token and
// anyone on an unowned asset (but admin) get 403 not_owner.
func TestDownloadMatrix(t *testing.T) {
	t.Parallel()
	b := setupDownloads(t)
	tests := []struct {
		who, tok string
		rec      asset.Record
		status   int
		code     string
		message  string
	}{
		{"owner", aliceTok, b.owned, http.StatusFound, "", ""},
		{"admin", adminTok, b.owned, http.StatusFound, "", ""},
		{"other account", bobTok, b.owned, http.StatusForbidden, "not_owner", `owner of asset ` + b.owned.ID + ` (account "alice") or an admin`},
		{"unbound read token", readTok, b.owned, http.StatusForbidden, "not_owner", "bound to no account"},
		{"ingest token", ingestT, b.owned, http.StatusForbidden, "forbidden", "read"},
		{"no token", "", b.owned, http.StatusUnauthorized, "unauthorized", ""},
		{"unowned, admin", adminTok, b.unowned, http.StatusFound, "", ""},
		{"unowned, bound account", aliceTok, b.unowned, http.StatusForbidden, "not_owner", "no owner: only an admin"},
		{"unowned, unbound read", readTok, b.unowned, http.StatusForbidden, "not_owner", "no owner: only an admin"},
	}
	for _, tt := range tests {
		resp, body := b.get(t, tt.rec.ID, tt.tok)
		if resp.StatusCode != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.who, resp.StatusCode, body, tt.status)
			continue
		}
		if tt.status != http.StatusFound {
			var eb ErrorBody
			json.Unmarshal(body, &eb)
			if eb.Error.Code != tt.code || !strings.Contains(eb.Error.Message, tt.message) {
				t.Errorf("%s: error %+v, want code %s mentioning %q", tt.who, eb.Error, tt.code, tt.message)
			}
			if resp.Header.Get("Location") != "" {
				t.Errorf("%s: refused with a Location", tt.who)
			}
			continue
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s: Cache-Control %q", tt.who, cc)
		}
		loc := resp.Header.Get("Location")
		u, err := url.Parse(loc)
		if err != nil || u.Scheme+"://"+u.Host != b.downloads.Origin() || u.Query().Get("X-Amz-Expires") != "60" {
			t.Fatalf("%s: Location %q is not a presigned URL of the store (%s) with DAB_DOWNLOAD_TTL", tt.who, loc, b.downloads.Origin())
		}
		var body302 struct {
			URL     string    `json:"url"`
			Expires time.Time `json:"expires_at"`
		}
		if err := json.Unmarshal(body, &body302); err != nil || body302.URL != loc || time.Until(body302.Expires) < 50*time.Second {
			t.Errorf("%s: 302 body %s", tt.who, body)
		}
		// The URL needs no dab token: the bytes come from the store.
		got, err := http.Get(loc)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(got.Body)
		got.Body.Close()
		sum := sha256.Sum256(data)
		if got.StatusCode != http.StatusOK || hex.EncodeToString(sum[:]) != b.sums[tt.rec.ID] || int64(len(data)) != tt.rec.Size {
			t.Errorf("%s: fetched %d, %d bytes, sha256 %x; want %d bytes %s", tt.who, got.StatusCode, len(data), sum, tt.rec.Size, b.sums[tt.rec.ID])
		}
		if d := got.Header.Get("Content-Disposition"); !strings.HasPrefix(d, "attachment") || !strings.Contains(d, tt.rec.Name) {
			t.Errorf("%s: Content-Disposition %q", tt.who, d)
		}
	}
	logs := b.log.String()
	if !strings.Contains(logs, `"msg":"asset.download","asset_id":"`+b.owned.ID+`","account":"alice"`) {
		t.Errorf("no download line for alice in the log:\n%s", logs)
	}
	if !strings.Contains(logs, `"msg":"asset.download_refused"`) {
		t.Errorf("refusals are not logged:\n%s", logs)
	}
	if strings.Contains(logs, "X-Amz-Signature") || strings.Contains(logs, "X-Amz-Credential") {
		t.Errorf("the log holds a presigned URL:\n%s", logs)
	}
}

// TestDownloadIDs: IDs not of the form dab makes are refused before Redis
// is asked; unknown IDs are 404 too.
func TestDownloadIDs(t *testing.T) {
	t.Parallel()
	b := setupDownloads(t)
	before := b.assets.gets.Load()
	for _, id := range []string{"nope", strings.ToUpper(b.owned.ID), b.owned.ID + "0", "..%2F..%2Fetc", "%2A", strings.Repeat("a", 300), "%E2%80%AE" + b.owned.ID[3:]} {
		resp, body := b.get(t, id, adminTok)
		var eb ErrorBody
		json.Unmarshal(body, &eb)
		if resp.StatusCode != http.StatusNotFound || eb.Error.Code != "asset_not_found" || !strings.Contains(eb.Error.Message, "20") {
			t.Errorf("id %q: %d %s", id, resp.StatusCode, body)
		}
	}
	if n := b.assets.gets.Load() - before; n != 0 {
		t.Errorf("malformed IDs reached the record store %d times", n)
	}
	resp, body := b.get(t, "0123456789abcdef0123", adminTok)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "asset_not_found") {
		t.Errorf("unknown ID: %d %s", resp.StatusCode, body)
	}
}

// TestDownloadsUnavailable: a server without a bucket says so (503), after
// the same checks as always.
func TestDownloadsUnavailable(t *testing.T) {
	t.Parallel()
	b := setupDownloads(t)
	tokens, _ := LoadTokens(adminTok, "")
	s := New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	RegisterDownload(s, DownloadDeps{Assets: b.assets})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	b.srv = srv
	resp, body := b.get(t, b.owned.ID, adminTok)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "downloads_unavailable") || !strings.Contains(string(body), "AWS_S3_BUCKET") {
		t.Fatalf("no presigner: %d %s", resp.StatusCode, body)
	}
	var d *Downloads
	if d.Origin() != "" {
		t.Fatal("a nil Downloads has an origin")
	}
	if _, err := d.PreviewURL(context.Background(), b.owned); !errors.Is(err, ErrNoDownloads) {
		t.Fatalf("nil Downloads preview: %v", err)
	}
}

// TestPreviewURL: images get an inline URL with their content type; other
// types get none.
func TestPreviewURL(t *testing.T) {
	t.Parallel()
	b := setupDownloads(t)
	u, err := b.downloads.PreviewURL(context.Background(), b.owned)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u, b.downloads.Origin()+"/") {
		t.Fatalf("preview URL %s is not under the origin %s", u, b.downloads.Origin())
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sum := sha256.Sum256(data)
	if resp.StatusCode != 200 || hex.EncodeToString(sum[:]) != b.sums[b.owned.ID] {
		t.Fatalf("preview fetch: %d, sha256 %x", resp.StatusCode, sum)
	}
	if ct, d := resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"); ct != "image/png" || !strings.HasPrefix(d, "inline") {
		t.Fatalf("preview answered %q %q", ct, d)
	}
	if _, err := b.downloads.PreviewURL(context.Background(), b.text); !errors.Is(err, ErrNoPreview) {
		t.Fatalf("text preview: %v, want ErrNoPreview", err)
	}
	for ct, want := range map[string]bool{"image/png": true, "image/JPEG": true, "image/webp; q=1": true, "image/svg+xml": false, "text/html": false, "": false} {
		if Previewable(asset.Record{ContentType: ct}) != want {
			t.Errorf("Previewable(%q) = %v", ct, !want)
		}
	}
}

// TestMayDownload is the rule on its own.
func TestMayDownload(t *testing.T) {
	t.Parallel()
	admin := Caller{Scopes: map[string]bool{ScopeAdmin: true}}
	alice := Caller{Scopes: map[string]bool{ScopeRead: true}, Account: "alice"}
	broker := Caller{Scopes: map[string]bool{ScopeBroker: true, ScopeRead: true}}
	for _, tt := range []struct {
		c     Caller
		owner string
		want  bool
	}{
		{admin, "alice", true}, {admin, "", true}, {alice, "alice", true}, {alice, "bob", false},
		{alice, "", false}, {broker, "alice", false}, {broker, "", false}, {Caller{}, "", false},
	} {
		if got := tt.c.MayDownload(tt.owner); got != tt.want {
			t.Errorf("%+v may download an asset of %q: %v", tt.c, tt.owner, got)
		}
	}
}
