package worker_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/netguard"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
	"github.com/dab-assets/dab/worker"
	"github.com/dab-assets/dab/worker/task"
)

// runImporter runs a worker whose imports may use guard and read the
// bucket "elsewhere" (and "nowhere-bucket"), up to 1 MiB.
func (b *bundle) runImporter(t *testing.T, guard *netguard.Guard) {
	t.Helper()
	b.runWith(t, func(cfg *worker.Config, _ *worker.Deps) {
		cfg.Imports, cfg.ImportMaxBytes, cfg.ImportS3Buckets = guard, 1<<20, []string{"elsewhere", "nowhere-bucket"}
	})
}

func (b *bundle) enqueueImport(t *testing.T, p task.ImportPayload) string {
	t.Helper()
	tk, err := task.NewImport(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Enqueue(tk); err != nil {
		t.Fatal(err)
	}
	return task.ImportTaskID(p.Key)
}

// waitImport waits until the import task is completed or archived.
func (b *bundle) waitImport(t *testing.T, id string) *asynq.TaskInfo {
	t.Helper()
	return b.pollTask(t, task.QueueImports, id, "import "+id+" to finish", func(info *asynq.TaskInfo) bool {
		return info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived
	})
}

func importedAsset(t *testing.T, info *asynq.TaskInfo) string {
	t.Helper()
	if info.State != asynq.TaskStateCompleted {
		t.Fatalf("import %s is %s: %s", info.ID, info.State, info.LastErr)
	}
	var res task.UploadResult
	if err := json.Unmarshal(info.Result, &res); err != nil || res.AssetID == "" {
		t.Fatalf("import result %s: %v", info.Result, err)
	}
	return res.AssetID
}

// sourceBucket creates the bucket "elsewhere" beside the bundle's, for
// import sources, and returns the store's options and a client.
func (b *bundle) sourceBucket(t *testing.T) (storage.Options, *s3.Client) {
	t.Helper()
	c := storagetest.Options(b.s3)
	cl := storagetest.Client(t, c)
	if _, err := cl.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("elsewhere")}); err != nil {
		t.Fatal(err)
	}
	return c, cl
}

// noCopies is an S3-compatible store without server-side copies (501).
type noCopies struct{ storage.S3API }

func (noCopies) UploadPartCopy(context.Context, *s3.UploadPartCopyInput, ...func(*s3.Options)) (*s3.UploadPartCopyOutput, error) {
	return nil, &smithy.GenericAPIError{Code: "NotImplemented", Message: "not implemented"}
}

func (noCopies) CopyObject(context.Context, *s3.CopyObjectInput, ...func(*s3.Options)) (*s3.CopyObjectOutput, error) {
	return nil, &smithy.GenericAPIError{Code: "NotImplemented", Message: "not implemented"}
}

// TestImportFromAnotherBucket: an object of another bucket is banked as an
// asset (same bytes, its plugin run, caller metadata kept): copied
// server-side when it carries a SHA-256, staged so the store hashes it
// when it does not, streamed when the store has no copies; the same key
// again imports nothing more.
func TestImportFromAnotherBucket(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		withSHA     bool
		noCopy      bool
		checksumOff bool
		method      string
	}{
		{"source with a sha256", true, false, false, task.ImportCopied},
		{"source without one", false, false, false, task.ImportStaged},
		{"store without copies", true, true, false, task.ImportStreamed},
		{"checksums off", true, false, true, task.ImportStreamed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			c, cl := b.sourceBucket(t)
			data := randomBytes(70_000, 3)
			in := &s3.PutObjectInput{Bucket: aws.String("elsewhere"), Key: aws.String("in/NODE_gate.png"), Body: bytes.NewReader(data)}
			if tc.withSHA {
				raw, _ := hex.DecodeString(harness.SHA256Hex(data))
				in.ChecksumSHA256 = aws.String(base64.StdEncoding.EncodeToString(raw))
			}
			if _, err := cl.PutObject(ctx, in); err != nil {
				t.Fatal(err)
			}
			b.runWith(t, func(cfg *worker.Config, deps *worker.Deps) {
				cfg.ImportMaxBytes, cfg.ImportS3Buckets = 1<<20, []string{"elsewhere"}
				if tc.noCopy {
					deps.Storage = storage.New(noCopies{cl}, c)
				}
				if tc.checksumOff {
					off := c
					off.ChecksumMode = storage.ChecksumOff
					deps.Storage = storage.New(cl, off)
				}
			})
			p := task.ImportPayload{Key: "imp-1", Source: "s3://elsewhere/in/NODE_gate.png", Type: "cyoa", Path: "castle/NODE_gate.png",
				SHA256: harness.SHA256Hex(data), Metadata: map[string]string{"price": "4"}}
			info := b.waitImport(t, b.enqueueImport(t, p))
			id := importedAsset(t, info)
			var res task.UploadResult
			if json.Unmarshal(info.Result, &res); res.Method != tc.method {
				t.Errorf("method %q, want %q", res.Method, tc.method)
			}
			rec, err := b.assets.Get(ctx, id)
			if err != nil || rec.SHA256 != harness.SHA256Hex(data) || rec.Metadata["graph_role"] != "node" || rec.Price == nil || *rec.Price != 4 ||
				rec.S3Key != "cyoa/castle/NODE_gate.png" || rec.ContentType != "image/png" {
				t.Fatalf("record %+v %v", rec, err)
			}
			if got := b.readObject(t, rec.S3Key); !bytes.Equal(got, data) {
				t.Fatal("the object differs from the source")
			}
			st := storage.New(cl, c)
			obj, err := st.Head(ctx, rec.S3Key)
			if err != nil {
				t.Fatal(err)
			}
			if om, err := obj.RecordMeta(); err != nil || om.SHA256 != harness.SHA256Hex(data) || om.Source != "import" || om.Metadata["price"] != "4" {
				t.Fatalf("object metadata %+v %v", om, err)
			}
			var staged []string
			st.ListKeys(ctx, storage.StagingPrefix, func(k string) error { staged = append(staged, k); return nil })
			if len(staged) != 0 {
				t.Fatalf("staged copies left: %v", staged)
			}
			tk, _ := task.NewImport(p)
			if _, err := b.client.Enqueue(tk); !task.IsAlreadyQueued(err) {
				t.Fatalf("the same key queued again: %v", err)
			}
			if n, _ := b.assets.Count(ctx, "cyoa"); n != 1 {
				t.Fatalf("%d records, want 1", n)
			}
		})
	}
}

// TestImportFromAnotherBucketRefused: a source over the cap, with another
// SHA-256 than the request's, missing, in a bucket not listed or in dab's
// own bucket is archived at once with the reason, and nothing is stored.
func TestImportFromAnotherBucketRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, cl := b.sourceBucket(t)
	for key, size := range map[string]int{"big.bin": 2 << 20, "small.bin": 1000} {
		if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("elsewhere"), Key: aws.String(key), Body: bytes.NewReader(randomBytes(size, 5))}); err != nil {
			t.Fatal(err)
		}
	}
	b.runImporter(t, nil)
	b.expectRefused(t, "s3", []refusal{
		{"over the cap", task.ImportPayload{Source: "s3://elsewhere/big.bin"}, "DAB_IMPORT_MAX_BYTES"},
		{"wrong sha256", task.ImportPayload{Source: "s3://elsewhere/small.bin", SHA256: harness.SHA256Hex([]byte("x"))}, "the request said"},
		{"missing", task.ImportPayload{Source: "s3://elsewhere/none.bin"}, "no such object or bucket"},
		{"no such bucket", task.ImportPayload{Source: "s3://nowhere-bucket/a.bin"}, "no such object or bucket"},
		{"not listed", task.ImportPayload{Source: "s3://payroll/a.bin"}, "not in DAB_IMPORT_S3_BUCKETS"},
		{"own bucket", task.ImportPayload{Source: "s3://" + b.s3.Bucket + "/journal/a.json"}, "dab's own bucket"},
	})
	if n, _ := b.assets.Count(ctx, ""); n != 0 {
		t.Fatalf("%d records after the refusals, want 0", n)
	}
}

// refusal is an import the worker must archive at once, with want in the
// reason.
type refusal struct {
	name string
	p    task.ImportPayload
	want string
}

// expectRefused enqueues each refusal (under folder/) and checks it is
// archived with its reason.
func (b *bundle) expectRefused(t *testing.T, folder string, cases []refusal) {
	t.Helper()
	for _, tc := range cases {
		tc.p.Key, tc.p.Type, tc.p.Path = "bad-"+tc.name, "generic", folder+"/"+strings.ReplaceAll(tc.name, " ", "-")
		info := b.waitImport(t, b.enqueueImport(t, tc.p))
		if info.State != asynq.TaskStateArchived || !strings.Contains(info.LastErr, tc.want) {
			t.Errorf("%s: %s %q, want archived with %q", tc.name, info.State, info.LastErr, tc.want)
		}
	}
}

// TestImportFromHTTPS: a URL is fetched through the guard (a private CA,
// loopback allowed by name), checked against the SHA-256 the caller gave
// and banked; a cut-off body is retried and banked once; what the guard
// refuses (plain http, loopback not allowed, a redirect), a wrong SHA-256
// and a file over the cap are archived at once with the reason.
func TestImportFromHTTPS(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	data := randomBytes(50_000, 4)
	var cuts atomic.Int32
	src, ca := harness.TLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/file.bin":
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(data)
		case "/flaky.bin":
			// The first answer is cut off mid-body (a crash of the source
			// or of the network): the retry gets it whole.
			if cuts.Add(1) == 1 {
				w.Header().Set("Content-Length", fmt.Sprint(len(data)))
				w.Write(data[:len(data)/2])
				if hj, ok := w.(http.Hijacker); ok {
					if conn, _, err := hj.Hijack(); err == nil {
						conn.Close()
					}
				}
				return
			}
			w.Write(data)
		case "/big.bin":
			w.Write(make([]byte, 2<<20))
		case "/moved":
			http.Redirect(w, r, "/file.bin", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	tlsConf, err := netguard.TLSWithCAs(ca)
	if err != nil {
		t.Fatal(err)
	}
	host := "127.0.0.1"
	b.runImporter(t, netguard.New(netguard.Options{AllowPrivate: []string{host}, TLS: tlsConf}))

	ok := b.waitImport(t, b.enqueueImport(t, task.ImportPayload{Key: "h-1", Source: src.URL + "/file.bin", Type: "generic", Path: "web/file.bin", SHA256: harness.SHA256Hex(data)}))
	rec, err := b.assets.Get(ctx, importedAsset(t, ok))
	if err != nil || rec.SHA256 != harness.SHA256Hex(data) || rec.Source != "import" {
		t.Fatalf("record %+v %v", rec, err)
	}
	flaky := b.waitImport(t, b.enqueueImport(t, task.ImportPayload{Key: "h-2", Source: src.URL + "/flaky.bin", Type: "generic", Path: "web/flaky.bin"}))
	importedAsset(t, flaky)
	if flaky.Retried < 1 || cuts.Load() < 2 {
		t.Fatalf("the cut-off import was not retried: %+v", flaky)
	}
	if n, _ := b.assets.Count(ctx, "generic"); n != 2 {
		t.Fatalf("%d records, want 2", n)
	}
	plainURL := strings.Replace(src.URL, "https://", "http://", 1)
	b.expectRefused(t, "web", []refusal{
		{"wrong sha256", task.ImportPayload{Source: src.URL + "/file.bin", SHA256: harness.SHA256Hex([]byte("other"))}, "the source's SHA-256 is"},
		{"over the cap", task.ImportPayload{Source: src.URL + "/big.bin"}, "DAB_IMPORT_MAX_BYTES"},
		{"plain http", task.ImportPayload{Source: plainURL + "/file.bin"}, "DAB_IMPORT_ALLOW_HTTP"},
		{"redirect", task.ImportPayload{Source: src.URL + "/moved"}, "redirected"},
		{"missing", task.ImportPayload{Source: src.URL + "/none"}, "404"},
		{"loopback by another name", task.ImportPayload{Source: strings.Replace(src.URL, "127.0.0.1", "localhost", 1) + "/file.bin"}, "loopback"},
	})
	if n, _ := b.assets.Count(ctx, "generic"); n != 2 {
		t.Fatalf("%d records after the refusals, want 2", n)
	}
}

// TestImportGuardRefusesPrivateAddresses: without the host named, loopback,
// private and link-local addresses are refused at the dial (the cloud
// metadata address too), whatever the URL's host name says.
func TestImportGuardRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	g := netguard.New(netguard.Options{Timeout: 2 * time.Second})
	cl := g.Client()
	for _, u := range []string{"https://127.0.0.1/x", "https://localhost/x", "https://10.1.2.3/x", "https://169.254.169.254/latest/meta-data/", "https://[::1]/x", "https://0.0.0.0/x"} {
		resp, err := cl.Get(u)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: fetched, want refused", u)
			continue
		}
		if !strings.Contains(err.Error(), "address refused") {
			t.Errorf("%s: %v, want refused", u, err)
		}
	}
	for _, u := range []string{"http://example.com/x", "ftp://example.com/x", "https://user:pw@example.com/x", "https:///x"} {
		if err := g.CheckURL(u); err == nil {
			t.Errorf("%s: allowed", u)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("%s: the error shows the password: %v", u, err)
		}
	}
}

// TestImportErrorsHideURLQuery: a presigned URL's query (its signature)
// never reaches the task's error, whatever the failure: an address the
// guard refuses, a redirect, a connection refused. The README promises
// "errors show URLs without their query".
func TestImportErrorsHideURLQuery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	src, ca := harness.TLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/file.bin?X-Amz-Signature=SECRETSIG2", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	tlsConf, err := netguard.TLSWithCAs(ca)
	if err != nil {
		t.Fatal(err)
	}
	b.runImporter(t, netguard.New(netguard.Options{AllowPrivate: []string{"127.0.0.1"}, TLS: tlsConf, Timeout: 2 * time.Second}))
	const q = "?X-Amz-Credential=AKIASECRET&X-Amz-Signature=SECRETSIG"
	for _, tc := range []struct{ name, url string }{
		{"refused address", strings.Replace(src.URL, "127.0.0.1", "localhost", 1) + "/file.bin" + q},
		{"redirect", src.URL + "/moved" + q},
		{"not found", src.URL + "/none" + q},
	} {
		id := b.enqueueImport(t, task.ImportPayload{Key: "q-" + tc.name, Source: tc.url, Type: "generic", Path: "web/" + strings.ReplaceAll(tc.name, " ", "-")})
		info := b.waitImport(t, id)
		if info.State != asynq.TaskStateArchived {
			t.Errorf("%s: %s, want archived", tc.name, info.State)
		}
		if strings.Contains(info.LastErr, "SECRET") {
			t.Errorf("%s: the error shows the URL's query: %s", tc.name, info.LastErr)
		}
	}
}

// TestImportOddSourceKeys: s3:// keys that need escaping in
// x-amz-copy-source (spaces, '+', '%', unicode, '#', '?', an encoded
// slash, a long key) and empty objects are banked with the source's exact
// bytes and SHA-256, copied, staged or streamed. A key holding
// "?versionId=" is an ordinary key and that object is banked: keys with a
// '?' are streamed, since versitygw decodes x-amz-copy-source before
// splitting off a version.
func TestImportOddSourceKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, cl := b.sourceBucket(t)
	b.runImporter(t, nil)
	long := strings.Repeat(strings.Repeat("k", 200)+"/", 4) + "end.bin"
	keys := []string{"a b.png", "a+b.png", "100%.png", "é/日本 ü.png", "h#frag.png", "q?x=1.png", "a%2Fb.png", "q?versionId=abc.png", long, "empty.bin"}
	for i, k := range keys {
		for _, withSHA := range []bool{true, false} {
			name := fmt.Sprintf("%q sha=%v", k, withSHA)
			data := randomBytes(3000+i, uint64(i))
			if k == "empty.bin" {
				data = nil
			}
			in := &s3.PutObjectInput{Bucket: aws.String("elsewhere"), Key: aws.String(k), Body: bytes.NewReader(data)}
			if withSHA {
				raw, _ := hex.DecodeString(harness.SHA256Hex(data))
				in.ChecksumSHA256 = aws.String(base64.StdEncoding.EncodeToString(raw))
			}
			if _, err := cl.PutObject(ctx, in); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			p := task.ImportPayload{Key: fmt.Sprintf("odd-%d-%v", i, withSHA), Source: "s3://elsewhere/" + k, Type: "generic",
				Path: fmt.Sprintf("odd/%d-%v.bin", i, withSHA)}
			if withSHA {
				p.SHA256 = harness.SHA256Hex(data)
			}
			info := b.waitImport(t, b.enqueueImport(t, p))
			if info.State != asynq.TaskStateCompleted {
				t.Errorf("%s: %s: %s", name, info.State, info.LastErr)
				continue
			}
			rec, err := b.assets.Get(ctx, importedAsset(t, info))
			if err != nil || rec.SHA256 != harness.SHA256Hex(data) || rec.Size != int64(len(data)) {
				t.Errorf("%s: record %+v %v", name, rec, err)
				continue
			}
			if got := b.readObject(t, rec.S3Key); !bytes.Equal(got, data) {
				t.Errorf("%s: the object differs from the source", name)
			}
		}
	}
}

// TestImportErrorsNameTheS3Source: the reason of a refused s3:// import
// names the source as given, not redacted as a URL would be (that cut a
// key at '?' or '#' and made one with a bare '%' "(a URL that does not
// parse)": the operator could not tell which object failed).
func TestImportErrorsNameTheS3Source(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, cl := b.sourceBucket(t)
	b.runImporter(t, nil)
	for i, k := range []string{"q?x=1.png", "h#frag.png", "100% off.png"} {
		if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("elsewhere"), Key: aws.String(k), Body: bytes.NewReader([]byte("data"))}); err != nil {
			t.Fatal(err)
		}
		src := "s3://elsewhere/" + k
		info := b.waitImport(t, b.enqueueImport(t, task.ImportPayload{Key: fmt.Sprintf("name-%d", i), Source: src, Type: "generic",
			Path: fmt.Sprintf("names/%d.bin", i), SHA256: harness.SHA256Hex([]byte("other"))}))
		if info.State != asynq.TaskStateArchived || !strings.HasPrefix(info.LastErr, "import "+src+":") {
			t.Errorf("%s: %s %q, want archived, the reason starting with %q", k, info.State, info.LastErr, "import "+src+":")
		}
	}
}

// TestImportStreamedSourceMissing: with DAB_S3_CHECKSUM=off nothing is
// copied server-side and the source is read with GET straight away; a
// missing one is archived at once, naming the fix.
func TestImportStreamedSourceMissing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, cl := b.sourceBucket(t)
	c.ChecksumMode = storage.ChecksumOff
	b.runWith(t, func(cfg *worker.Config, deps *worker.Deps) {
		cfg.ImportS3Buckets = []string{"elsewhere"}
		deps.Storage = storage.New(cl, c)
	})
	info := b.waitImport(t, b.enqueueImport(t, task.ImportPayload{Key: "gone", Source: "s3://elsewhere/gone.png", Type: "generic", Path: "gone.png"}))
	if info.State != asynq.TaskStateArchived || !strings.Contains(info.LastErr, "no such object or bucket") {
		t.Fatalf("%s %q, want archived naming the missing source", info.State, info.LastErr)
	}
}
