package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/netguard"
	"github.com/dab-assets/dab/internal/storage/storagetest"
	"github.com/dab-assets/dab/worker"
	"github.com/dab-assets/dab/worker/task"
)

// runImporter runs a worker whose imports may use guard, up to 1 MiB.
func (b *bundle) runImporter(t *testing.T, guard *netguard.Guard) {
	t.Helper()
	b.runWith(t, func(cfg *worker.Config, _ *worker.Deps) { cfg.Imports, cfg.ImportMaxBytes = guard, 1<<20 })
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
	var info *asynq.TaskInfo
	harness.Eventually(t, 60*time.Second, "import "+id+" to finish", func() bool {
		var err error
		info, err = b.insp.GetTaskInfo(task.QueueImports, id)
		return err == nil && (info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived)
	}, func() string { return fmt.Sprintf("%+v", info) })
	return info
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

// TestImportFromAnotherBucket: an object of another bucket is banked as an
// asset (same bytes, its plugin run, caller metadata kept); the same key
// again imports nothing more.
func TestImportFromAnotherBucket(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c := storagetest.Options(b.s3)
	cl := storagetest.Client(t, c)
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("elsewhere")}); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(70_000, 3)
	if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("elsewhere"), Key: aws.String("in/NODE_gate.png"), Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	b.runImporter(t, nil)
	p := task.ImportPayload{Key: "imp-1", Source: "s3://elsewhere/in/NODE_gate.png", Type: "cyoa", Path: "castle/NODE_gate.png",
		SHA256: sha(data), Metadata: map[string]string{"price": "4"}}
	id := importedAsset(t, b.waitImport(t, b.enqueueImport(t, p)))
	rec, err := b.assets.Get(ctx, id)
	if err != nil || rec.SHA256 != sha(data) || rec.Metadata["graph_role"] != "node" || rec.Price == nil || *rec.Price != 4 || rec.S3Key != "cyoa/castle/NODE_gate.png" {
		t.Fatalf("record %+v %v", rec, err)
	}
	if got := b.readObject(t, rec.S3Key); !bytes.Equal(got, data) {
		t.Fatal("the object differs from the source")
	}
	tk, _ := task.NewImport(p)
	if _, err := b.client.Enqueue(tk); !task.IsAlreadyQueued(err) {
		t.Fatalf("the same key queued again: %v", err)
	}
	if n, _ := b.assets.Count(ctx, "cyoa"); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}

// tlsSource serves files over HTTPS on loopback and gives the PEM of its
// certificate (the CA a worker must trust).
func tlsSource(t *testing.T, h http.Handler) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, ca
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
	src, ca := tlsSource(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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

	ok := b.waitImport(t, b.enqueueImport(t, task.ImportPayload{Key: "h-1", Source: src.URL + "/file.bin", Type: "generic", Path: "web/file.bin", SHA256: sha(data)}))
	rec, err := b.assets.Get(ctx, importedAsset(t, ok))
	if err != nil || rec.SHA256 != sha(data) || rec.Source != "import" {
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
	for _, tc := range []struct {
		name string
		p    task.ImportPayload
		want string
	}{
		{"wrong sha256", task.ImportPayload{Source: src.URL + "/file.bin", SHA256: sha([]byte("other"))}, "the source's SHA-256 is"},
		{"over the cap", task.ImportPayload{Source: src.URL + "/big.bin"}, "DAB_IMPORT_MAX_BYTES"},
		{"plain http", task.ImportPayload{Source: plainURL + "/file.bin"}, "DAB_IMPORT_ALLOW_HTTP"},
		{"redirect", task.ImportPayload{Source: src.URL + "/moved"}, "redirected"},
		{"missing", task.ImportPayload{Source: src.URL + "/none"}, "404"},
		{"loopback by another name", task.ImportPayload{Source: strings.Replace(src.URL, "127.0.0.1", "localhost", 1) + "/file.bin"}, "loopback"},
	} {
		tc.p.Key, tc.p.Type, tc.p.Path = "bad-"+tc.name, "generic", "web/"+strings.ReplaceAll(tc.name, " ", "-")
		info := b.waitImport(t, b.enqueueImport(t, tc.p))
		if info.State != asynq.TaskStateArchived || !strings.Contains(info.LastErr, tc.want) {
			t.Errorf("%s: %s %q, want archived with %q", tc.name, info.State, info.LastErr, tc.want)
		}
	}
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
