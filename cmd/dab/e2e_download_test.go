package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

const (
	dlAliceTok = "e2e-alice-read-token-012345"
	dlBobTok   = "e2e-bob-read-token-01234567"
	dlReadTok  = "e2e-unbound-read-token-0123"
)

// putAsset stores random bytes under key and records them as an asset of
// owner (empty: nobody's), as a worker would.
func (e *e2e) putAsset(t *testing.T, key, name, owner string, size int) asset.Record {
	t.Helper()
	p, sum := writeRandomFile(t, t.TempDir(), "src", size)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	if _, err := storagetest.Store(t, e.s3).Put(ctx, storage.PutInput{Key: key, File: f, Size: int64(size), SHA256: sum, ContentType: "image/png"}); err != nil {
		t.Fatal(err)
	}
	rec, _, err := e.records(t).Put(ctx, asset.Record{Name: name, Type: "generic", Path: name, S3Bucket: e.s3.Bucket, S3Key: key,
		Size: int64(size), SHA256: sum, ContentType: "image/png", Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// onlyFiles lists a folder, so a test can tell that nothing partial stayed.
func onlyFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// TestAssetsGetLocal: without a server, `dab assets get` reads the record
// from Redis, presigns with the local store settings, saves the bytes under
// the asset's name, verifies them, and never replaces a file unless told.
func TestAssetsGetLocal(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	big := e.putAsset(t, "generic/art/big.png", "big.png", "alice", 7<<20+5) // a multipart object
	small := e.putAsset(t, "generic/small.png", "small.png", "", 300)

	out, errOut, code := e.run(nil, "assets", "get", big.ID)
	dest := filepath.Join(e.dir, "big.png")
	if code != 0 || fileSHA(t, dest) != big.SHA256 || !strings.Contains(out, "big.png") || !strings.Contains(out, "sha256 verified") {
		t.Fatalf("get: exit %d\n%s%s", code, out, errOut)
	}

	// An existing file stays as it is without --force.
	os.WriteFile(dest, []byte("mine"), 0o644)
	_, errOut, code = e.run(nil, "assets", "get", big.ID)
	if code != 1 || !strings.Contains(errOut, "exists") || !strings.Contains(errOut, "--force") {
		t.Fatalf("get over an existing file: exit %d %s", code, errOut)
	}
	if b, _ := os.ReadFile(dest); string(b) != "mine" {
		t.Fatal("an existing file was replaced without --force")
	}
	if _, errOut, code = e.run(nil, "assets", "get", big.ID, "--force"); code != 0 || fileSHA(t, dest) != big.SHA256 {
		t.Fatalf("--force: exit %d %s", code, errOut)
	}

	// -o names the file; a folder gets the asset's name inside it.
	other := filepath.Join(t.TempDir(), "copy.bin")
	if _, errOut, code = e.run(nil, "assets", "get", small.ID, "-o", other); code != 0 || fileSHA(t, other) != small.SHA256 {
		t.Fatalf("-o FILE: exit %d %s", code, errOut)
	}
	folder := t.TempDir()
	if _, errOut, code = e.run(nil, "assets", "get", small.ID, "-o", folder); code != 0 || fileSHA(t, filepath.Join(folder, "small.png")) != small.SHA256 {
		t.Fatalf("-o FOLDER: exit %d %s", code, errOut)
	}
	if names := onlyFiles(t, folder); len(names) != 1 {
		t.Fatalf("the folder holds %v", names)
	}
	// By key, as dab assets list shows it.
	byKey := filepath.Join(t.TempDir(), "by-key.png")
	if _, errOut, code = e.run(nil, "assets", "get", "generic/small.png", "-o", byKey); code != 0 || fileSHA(t, byKey) != small.SHA256 {
		t.Fatalf("get by key: exit %d %s", code, errOut)
	}
	if out, errOut, code := e.run(nil, "assets", "show", "generic/art/big.png"); code != 0 || !strings.Contains(out, big.ID) {
		t.Fatalf("show by key: exit %d\n%s%s", code, out, errOut)
	}

	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"assets", "get", "0123456789abcdef0123"}, 1, "no asset"},
		{[]string{"assets", "get", "../../etc/passwd"}, 1, "neither an asset ID (20 hex digits) nor an asset's key"},
		{[]string{"assets", "get", "generic/../../etc/passwd"}, 1, "neither an asset ID"},
		{[]string{"assets", "get", "generic/nothing.png"}, 1, `no asset "generic/nothing.png"`},
		{[]string{"assets", "get"}, 2, "dab assets get ID"},
		{[]string{"assets", "get", small.ID, "-o", filepath.Join(t.TempDir(), "missing", "x")}, 1, "missing"},
	} {
		if _, errOut, code := e.run(nil, tt.args...); code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d %s, want %d mentioning %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
}

// TestAssetsGetMismatch: bytes that do not match the record (the record or
// the object tampered with) fail the command, and nothing is left behind.
func TestAssetsGetMismatch(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	rec := e.putAsset(t, "generic/a.png", "a.png", "alice", 5000)
	other := e.putAsset(t, "generic/b.png", "b.png", "alice", 5000)
	ctx := context.Background()

	// The record says another SHA-256: the whole body is read, then refused.
	rdb := e.redisClient(t)
	recorded := strings.Repeat("ab", 32)
	if err := rdb.HSet(ctx, asset.Keys{Prefix: "dab:"}.Record(rec.ID), "sha256", recorded).Err(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dest := filepath.Join(dir, "a.png")
	_, errOut, code := e.run(nil, "assets", "get", rec.ID, "-o", dest)
	if code != 1 || !strings.Contains(errOut, "sha256") || !strings.Contains(errOut, rec.SHA256) || !strings.Contains(errOut, recorded) {
		t.Fatalf("sha256 mismatch: exit %d %s", code, errOut)
	}
	if names := onlyFiles(t, dir); len(names) != 0 {
		t.Fatalf("a mismatching download left %v", names)
	}

	// The object was replaced by one of another size.
	client := storagetest.Client(t, storagetest.Options(e.s3))
	if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(e.s3.Bucket), Key: aws.String(other.S3Key),
		Body: bytes.NewReader(bytes.Repeat([]byte("x"), 4999))}); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = e.run(nil, "assets", "get", other.ID, "-o", filepath.Join(dir, "b.png"))
	if code != 1 || !strings.Contains(errOut, "4999 bytes") || !strings.Contains(errOut, "5000 bytes") {
		t.Fatalf("size mismatch: exit %d %s", code, errOut)
	}
	if names := onlyFiles(t, dir); len(names) != 0 {
		t.Fatalf("a mismatching download left %v", names)
	}
}

// storeSpy is an HTTP proxy in front of the store that records what
// reaches it: a presigned URL must get there with no dab token.
type storeSpy struct {
	mu       sync.Mutex
	requests int
	leaked   []string
}

func (e *e2e) storeSpy(t *testing.T) (*storeSpy, string) {
	t.Helper()
	target, err := url.Parse(e.s3.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	// The Host header is kept: it is part of what the URL's signature covers.
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.Out.URL.Scheme, pr.Out.URL.Host = target.Scheme, target.Host
	}}
	spy := &storeSpy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		spy.mu.Lock()
		spy.requests++
		for _, h := range []string{"Authorization", "Cookie"} {
			if v := r.Header.Get(h); v != "" {
				spy.leaked = append(spy.leaked, h+": "+v)
			}
		}
		spy.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return spy, srv.URL
}

// downloadAPI is a dab API with the query and download routes, whose URLs
// point at storeURL (the store, or a proxy in front of it).
func (e *e2e) downloadAPI(t *testing.T, storeURL string) string {
	t.Helper()
	tokensFile := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokensFile, []byte("read@alice "+dlAliceTok+"\nread@bob "+dlBobTok+"\nread "+dlReadTok+"\n"), 0o600)
	tokens, err := api.LoadTokens(e2eToken, tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	c := storagetest.Options(e.s3)
	c.Endpoint = storeURL
	client, err := storage.NewClient(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := storage.NewPresigner(s3.NewPresignClient(client), c.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	s := api.New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	records := e.records(t)
	api.RegisterQueries(s, api.QueryDeps{Assets: records})
	api.RegisterDownload(s, api.DownloadDeps{Assets: records, Downloads: api.NewDownloads(ps, time.Minute)})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// viaServer is the environment of a client that has only the API: no
// Redis, no store credentials.
func viaServer(server, token string) []string {
	return []string{"DAB_SERVER=" + server, "DAB_TOKEN=" + token, "DAB_REDIS_URL=redis://127.0.0.1:1/0",
		"AWS_S3_BUCKET=", "AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_ENDPOINT_URL_S3="}
}

// TestAssetsGetThroughAPI: with --server, the CLI follows the API's 302 to
// the store without sending its token there (the store is on the same host
// name as the API, where Go's client would pass the header on), and
// verifies the bytes; a non-owner is refused.
func TestAssetsGetThroughAPI(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	spy, spyURL := e.storeSpy(t)
	server := e.downloadAPI(t, spyURL)
	rec := e.putAsset(t, "generic/alice/pic.png", "pic.png", "alice", 7<<20+1)
	house := e.putAsset(t, "generic/house.png", "house.png", "", 1000)

	dir := t.TempDir()
	dest := filepath.Join(dir, "pic.png")
	out, errOut, code := e.run(viaServer(server, dlAliceTok), "assets", "get", rec.ID, "-o", dest)
	if code != 0 || fileSHA(t, dest) != rec.SHA256 {
		t.Fatalf("owner: exit %d\n%s%s", code, out, errOut)
	}
	// By key through the API too: the ID comes from the bucket the records name.
	if out, errOut, code := e.run(viaServer(server, dlAliceTok), "assets", "show", "generic/alice/pic.png"); code != 0 || !strings.Contains(out, rec.ID) {
		t.Fatalf("show by key through the API: exit %d\n%s%s", code, out, errOut)
	}
	spy.mu.Lock()
	requests, leaked := spy.requests, spy.leaked
	spy.mu.Unlock()
	if requests == 0 {
		t.Fatal("the download did not come from the store")
	}
	if len(leaked) > 0 {
		t.Fatalf("the store received dab credentials: %v", leaked)
	}

	for _, tt := range []struct {
		who, tok string
		rec      asset.Record
		code     int
		want     string
	}{
		{"other account", dlBobTok, rec, 1, "not_owner"},
		{"unbound read token", dlReadTok, rec, 1, "not_owner"},
		{"bound account, unowned asset", dlAliceTok, house, 1, "only an admin"},
		{"admin, unowned asset", e2eToken, house, 0, ""},
		{"wrong token", "not-a-token-0123456789", rec, 1, "401"},
	} {
		p := filepath.Join(t.TempDir(), "out")
		_, errOut, code := e.run(viaServer(server, tt.tok), "assets", "get", tt.rec.ID, "-o", p)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("%s: exit %d %s, want %d mentioning %q", tt.who, code, errOut, tt.code, tt.want)
		}
		if _, err := os.Stat(p); (err == nil) != (tt.code == 0) {
			t.Errorf("%s: file there = %v", tt.who, err == nil)
		}
		if tt.code == 0 && fileSHA(t, p) != tt.rec.SHA256 {
			t.Errorf("%s: wrong bytes", tt.who)
		}
	}

	// Through the API, too, a record that does not match its bytes fails.
	ctx := context.Background()
	if err := e.redisClient(t).HSet(ctx, asset.Keys{Prefix: "dab:"}.Record(house.ID), "sha256", rec.SHA256).Err(); err != nil {
		t.Fatal(err)
	}
	mdir := t.TempDir()
	if _, errOut, code := e.run(viaServer(server, e2eToken), "assets", "get", house.ID, "-o", filepath.Join(mdir, "h.png")); code != 1 || !strings.Contains(errOut, "sha256") {
		t.Fatalf("mismatch through the API: exit %d %s", code, errOut)
	}
	if names := onlyFiles(t, mdir); len(names) != 0 {
		t.Fatalf("a mismatching download left %v", names)
	}
}

// TestAssetsGetThroughDabServe: the real server (`dab serve`) answers
// GET /v1/assets/{id}/download for the owner's bound token.
func TestAssetsGetThroughDabServe(t *testing.T) {
	t.Parallel()
	e, base := httpE2E(t)
	tokensFile := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokensFile, []byte("read@alice "+dlAliceTok+"\nread@bob "+dlBobTok+"\n"), 0o600)
	e.env = append(e.env, "DAB_TOKENS_FILE="+tokensFile, "DAB_DOWNLOAD_TTL=30s")
	e.start(nil, "serve").waitLog(t, "http.listening", 30*time.Second)
	rec := e.putAsset(t, "generic/alice/served.png", "served.png", "alice", 4321)
	dest := filepath.Join(t.TempDir(), "served.png")
	if out, errOut, code := e.run(viaServer(base, dlAliceTok), "assets", "get", rec.ID, "-o", dest); code != 0 || fileSHA(t, dest) != rec.SHA256 {
		t.Fatalf("owner through dab serve: exit %d\n%s%s(does cmd/dab/http.go call api.RegisterDownload?)", code, out, errOut)
	}
	if _, errOut, code := e.run(viaServer(base, dlBobTok), "assets", "get", rec.ID, "-o", dest+".bob"); code != 1 || !strings.Contains(errOut, "not_owner") {
		t.Fatalf("non-owner through dab serve: exit %d %s", code, errOut)
	}
	// The URL lives DAB_DOWNLOAD_TTL.
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/assets/"+rec.ID+"/download", nil)
	req.Header.Set("Authorization", "Bearer "+dlAliceTok)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc == nil || loc.Query().Get("X-Amz-Expires") != "30" {
		t.Fatalf("dab serve answered %d, Location %v", resp.StatusCode, loc)
	}
}
