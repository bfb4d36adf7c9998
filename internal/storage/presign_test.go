package storage_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

// presignBundle is a store with one object in it and a presigner for it.
type presignBundle struct {
	srv    *harness.S3
	ps     *storage.Presigner
	key    string
	sha256 string
	size   int
}

func setupPresign(t *testing.T, size int) *presignBundle {
	t.Helper()
	srv := harness.StartS3(t)
	c := storagetest.Options(srv)
	client := storagetest.Client(t, c)
	st := storage.New(client, c)
	f, sum := storage.WriteTestFile(t, size)
	key := "generic/folder/photo.png"
	if _, err := st.Put(context.Background(), storage.PutInput{Key: key, File: f, Size: int64(size), SHA256: sum, ContentType: "image/png"}); err != nil {
		t.Fatal(err)
	}
	ps, err := storage.NewPresigner(s3.NewPresignClient(client), c.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return &presignBundle{srv: srv, ps: ps, key: key, sha256: sum, size: size}
}

// fetch GETs a URL with no credentials at all, as a browser would.
func fetch(t *testing.T, u string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestPresignedURLFetchesTheExactBytes(t *testing.T) {
	t.Parallel()
	b := setupPresign(t, 7<<20+11) // a multipart object
	before := time.Now()
	su, err := b.ps.GetURL(context.Background(), "", b.key, storage.URLOptions{TTL: time.Minute, Filename: "photo.png"})
	if err != nil {
		t.Fatal(err)
	}
	if su.Expires.Before(before.Add(time.Minute-time.Second)) || su.Expires.After(time.Now().Add(time.Minute+time.Second)) {
		t.Fatalf("expires %s, want about a minute from now", su.Expires)
	}
	u, err := url.Parse(su.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Scheme + "://" + u.Host; got != b.ps.Origin() || got != b.srv.Endpoint() {
		t.Fatalf("URL origin %s; Origin() %s; the store is at %s", got, b.ps.Origin(), b.srv.Endpoint())
	}
	if u.Query().Get("X-Amz-Expires") != "60" || u.Query().Get("X-Amz-Signature") == "" {
		t.Fatalf("not a presigned URL with a 60 s lifetime: %s", u.RawQuery)
	}
	resp, body := fetch(t, su.URL)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET presigned URL: %d %s", resp.StatusCode, body)
	}
	if sum := sha256.Sum256(body); len(body) != b.size || hex.EncodeToString(sum[:]) != b.sha256 {
		t.Fatalf("got %d bytes sha256 %x, want %d bytes %s", len(body), sum, b.size, b.sha256)
	}
	if d, p, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err != nil || d != "attachment" || p["filename"] != "photo.png" {
		t.Fatalf("Content-Disposition %q", resp.Header.Get("Content-Disposition"))
	}
}

// TestPresignedURLExpires: a URL is refused by the store once its lifetime
// is over, and lifetimes outside what S3 accepts are refused up front.
func TestPresignedURLExpires(t *testing.T) {
	t.Parallel()
	b := setupPresign(t, 100)
	// SigV4 dates have whole seconds: sign just after a second begins, so
	// the URL surely works for most of its one second.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
	su, err := b.ps.GetURL(context.Background(), "", b.key, storage.URLOptions{TTL: storage.URLTTLMin})
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := fetch(t, su.URL); resp.StatusCode != http.StatusOK {
		t.Fatalf("fresh URL answered %d", resp.StatusCode)
	}
	time.Sleep(2100 * time.Millisecond)
	resp, body := fetch(t, su.URL)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(strings.ToLower(string(body)), "expired") {
		t.Fatalf("expired URL answered %d %s, want 403 saying it expired", resp.StatusCode, body)
	}
	for _, ttl := range []time.Duration{0, storage.URLTTLMin - time.Millisecond, storage.URLTTLMax + time.Second} {
		if _, err := b.ps.GetURL(context.Background(), "", b.key, storage.URLOptions{TTL: ttl}); err == nil || !strings.Contains(err.Error(), "DAB_DOWNLOAD_TTL") {
			t.Errorf("ttl %s: err = %v, want a refusal naming DAB_DOWNLOAD_TTL", ttl, err)
		}
	}
}

// TestPresignedURLOtherCredentialsRefused: a signature made with the wrong
// secret gives nothing (the store checks presigned URLs like any request).
func TestPresignedURLWrongSecret(t *testing.T) {
	t.Parallel()
	b := setupPresign(t, 100)
	c := storagetest.Options(b.srv)
	c.SecretAccessKey = "not-the-secret"
	ps, err := storage.NewPresigner(s3.NewPresignClient(storagetest.Client(t, c)), c.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	su, err := ps.GetURL(context.Background(), "", b.key, storage.URLOptions{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := fetch(t, su.URL); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("URL signed with a wrong secret answered %d", resp.StatusCode)
	}
}

// TestContentDisposition: the file name reaches the browser intact, however
// odd, and can never split the header or name a folder.
func TestContentDisposition(t *testing.T) {
	t.Parallel()
	b := setupPresign(t, 10)
	tests := []struct {
		name     string
		inline   bool
		wantType string
		wantName string
	}{
		{"photo.png", false, "attachment", "photo.png"},
		{"photo.png", true, "inline", "photo.png"},
		{`say "hi"; x=1.png`, false, "attachment", `say "hi"; x=1.png`},
		{"naïve résumé 東京.png", false, "attachment", "naïve résumé 東京.png"},
		{"../../etc/passwd", false, "attachment", "passwd"},
		{`C:\temp\evil.exe`, false, "attachment", "evil.exe"},
		{"a\r\nSet-Cookie: x=y.png", false, "attachment", "aSet-Cookie: x=y.png"},
		{"100% real.png", false, "attachment", "100% real.png"},
		{"..", false, "attachment", ""},
		{"", true, "inline", ""},
	}
	for _, tt := range tests {
		su, err := b.ps.GetURL(context.Background(), "", b.key, storage.URLOptions{TTL: time.Minute, Filename: tt.name, Inline: tt.inline})
		if err != nil {
			t.Fatal(err)
		}
		resp, _ := fetch(t, su.URL)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%q: %d", tt.name, resp.StatusCode)
		}
		raw := resp.Header.Get("Content-Disposition")
		d, p, err := mime.ParseMediaType(raw)
		if err != nil || d != tt.wantType || p["filename"] != tt.wantName {
			t.Errorf("name %q: Content-Disposition %q parses to %q %q (%v), want %q %q", tt.name, raw, d, p["filename"], err, tt.wantType, tt.wantName)
		}
	}
	// A content type for previews.
	su, err := b.ps.GetURL(context.Background(), "", b.key, storage.URLOptions{TTL: time.Minute, Inline: true, ContentType: "image/png"})
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := fetch(t, su.URL); resp.Header.Get("Content-Type") != "image/png" || resp.Header.Get("Content-Disposition") != "inline" {
		t.Fatalf("preview answered %q %q", resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"))
	}
}

// TestPresignerOrigin: Origin is where the URLs point, for AWS (virtual
// hosts or path style) and for S3-compatible endpoints, computed without
// credentials or a network.
func TestPresignerOrigin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		c    storage.Options
		want string
	}{
		{"aws virtual host", storage.Options{Bucket: "my-assets", Region: "eu-west-1"}, "https://my-assets.s3.eu-west-1.amazonaws.com"},
		{"aws path style", storage.Options{Bucket: "my-assets", Region: "eu-west-1", PathStyle: true}, "https://s3.eu-west-1.amazonaws.com"},
		{"endpoint path style", storage.Options{Bucket: "my-assets", Endpoint: "http://127.0.0.1:7070", PathStyle: true}, "http://127.0.0.1:7070"},
		{"endpoint virtual host", storage.Options{Bucket: "my-assets", Endpoint: "https://s3.example.internal:8443"}, "https://my-assets.s3.example.internal:8443"},
	}
	for _, tt := range tests {
		tt.c.AccessKeyID, tt.c.SecretAccessKey = "AKIDEXAMPLE", "secret"
		client, err := storage.NewClient(context.Background(), tt.c)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := storage.NewPresigner(s3.NewPresignClient(client), tt.c.Bucket)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if ps.Origin() != tt.want {
			t.Errorf("%s: Origin() = %q, want %q", tt.name, ps.Origin(), tt.want)
		}
		su, err := ps.GetURL(context.Background(), "", "cyoa/forest/NODE_a.png", storage.URLOptions{TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(su.URL, tt.want+"/") {
			t.Errorf("%s: URL %s is not under %s", tt.name, su.URL, tt.want)
		}
	}
}
