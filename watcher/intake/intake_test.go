package intake

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/idem"
	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/spool/spooltest"
	"github.com/dab-assets/dab/internal/storage/storagetest"
	"github.com/dab-assets/dab/worker/task"
)

const (
	testAdmin  = "admin-token-for-tests-0001"
	testReader = "read-token-for-tests-00001"
	testIngest = "ingest-token-for-tests-001"
	testBuyer  = "purchase-token-for-tests1" // bound to account zed
	testBroker = "broker-token-for-tests-01"
)

// httpBundle is a full API server (queries + intake) on real Redis and S3.
type httpBundle struct {
	*bundle
	srv    *httptest.Server
	assets *asset.Store
	intake *Intake
	bucket string // dab's own
}

// setupHTTP starts the server; opts may change the bundle first (another
// spool, say).
func setupHTTP(t *testing.T, cfg Config, opts ...func(*bundle)) *httpBundle {
	t.Helper()
	b := setup(t)
	for _, o := range opts {
		o(b)
	}
	s3 := harness.StartS3(t)
	rdb := harness.RedisClient(t, b.redis)
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("read "+testReader+"\ningest "+testIngest+"\nread,purchase@zed "+testBuyer+"\nbroker "+testBroker+"\n"), 0o600)
	tokens, err := api.LoadTokens(testAdmin, file)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(b.logs, nil))
	s := api.New(tokens, false, log)
	st := storagetest.Store(t, s3)
	assets := asset.NewStore(rdb, "dab:")
	api.RegisterQueries(s, api.QueryDeps{
		Inspector: asynq.NewInspectorFromRedisClient(rdb), Queues: []string{task.QueueUploads, task.QueuePurchases}, Assets: assets,
		Checks: map[string]func(context.Context) error{
			"redis":  func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
			"bucket": st.Check,
		},
	})
	cfg.Plugins, cfg.Logger = builtin.Registry(), log
	if cfg.TusDir == "" {
		cfg.TusDir = filepath.Join(filepath.Dir(b.spool.Dir()), "tus")
	}
	in, err := New(cfg, b.spool, b.client, idem.New(rdb, "dab:"))
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Register(s); err != nil {
		t.Fatal(err)
	}
	api.RegisterImports(s, &Imports{Queue: b.client, Tasks: b.insp, Sources: task.S3Sources{Buckets: []string{"partner"}, Own: s3.Bucket}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &httpBundle{bundle: b, srv: srv, assets: assets, intake: in, bucket: s3.Bucket}
}

// answer is a response read whole.
type answer = harness.Answer

func (h *httpBundle) do(t *testing.T, method, path, token string, body io.Reader, hdr map[string]string) answer {
	t.Helper()
	return harness.Request(t, method, h.srv.URL+path, token, body, hdr)
}

// form builds a multipart body; fields are written in the given order.
func form(t *testing.T, fields [][2]string, filename string, data []byte, fileFirst bool) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	writeFile := func() {
		fw, _ := mw.CreateFormFile("file", filename)
		fw.Write(data)
	}
	if fileFirst {
		writeFile()
	}
	for _, f := range fields {
		mw.WriteField(f[0], f[1])
	}
	if !fileFirst {
		writeFile()
	}
	mw.Close()
	return &buf, mw.FormDataContentType()
}

// spoolEmpty fails unless the spool, including its incoming folder, is empty.
func spoolEmpty(t *testing.T, sp *spool.Spool) {
	t.Helper()
	if n := len(spooltest.Entries(t, sp)); n != 0 {
		t.Fatalf("%d entries left in the spool", n)
	}
	incoming, _ := os.ReadDir(filepath.Join(sp.Dir(), ".incoming"))
	if len(incoming) != 0 {
		t.Fatalf("%d half-written uploads left in the spool", len(incoming))
	}
}

func TestPostAndPut(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{})
	tests := []struct {
		name      string
		fields    [][2]string
		fileFirst bool
		wantKey   string
		wantMeta  map[string]string
	}{
		{"defaults", nil, false, "generic/a.bin", nil},
		{"typed, named, metadata", [][2]string{{"type", "cyoa"}, {"name", "forest/NODE_x.png"}, {"metadata", `{"price": "10", "n": 3}`}}, false,
			"cyoa/forest/NODE_x.png", map[string]string{"price": "10", "n": "3"}},
		{"fields after the file", [][2]string{{"type", "cyoa"}, {"name", "EDGE_x_to_y.png"}}, true, "cyoa/EDGE_x_to_y.png", nil},
	}
	for _, tt := range tests {
		body, ctype := form(t, tt.fields, "a.bin", []byte("data of "+tt.name), tt.fileFirst)
		a := h.do(t, http.MethodPost, "/v1/assets", testIngest, body, map[string]string{"Content-Type": ctype})
		var acc api.Accepted
		a.JSON(t, &acc)
		if a.Status != http.StatusAccepted || acc.Key != tt.wantKey || acc.StatusURL != "/v1/tasks/"+acc.TaskID || a.Header.Get("Location") != acc.StatusURL {
			t.Fatalf("%s: %d %s", tt.name, a.Status, a.Body)
		}
		m, err := h.spool.Get(acc.SpoolID)
		if err != nil || m.SHA256 != harness.SHA256Hex([]byte("data of "+tt.name)) || m.Source != "http" {
			t.Fatalf("%s: entry %+v, %v", tt.name, m, err)
		}
		for k, v := range tt.wantMeta {
			if m.Metadata[k] != v {
				t.Fatalf("%s: metadata %v", tt.name, m.Metadata)
			}
		}
		// The task is queued and can be followed.
		var tk api.Task
		ta := h.do(t, http.MethodGet, acc.StatusURL, testReader, nil, nil)
		ta.JSON(t, &tk)
		if ta.Status != 200 || tk.State != "pending" || tk.ID != acc.TaskID || tk.Type != task.TypeUpload {
			t.Fatalf("%s: task %d %s", tt.name, ta.Status, ta.Body)
		}
	}
	a := h.do(t, http.MethodPut, "/v1/assets/cyoa/story/HOPTO_end.png", testAdmin, strings.NewReader("raw"), map[string]string{"Dab-Metadata": `{"price":"5"}`})
	var acc api.Accepted
	a.JSON(t, &acc)
	if a.Status != 202 || acc.Key != "cyoa/story/HOPTO_end.png" || acc.Size != 3 {
		t.Fatalf("put: %d %s", a.Status, a.Body)
	}
	if m, _ := h.spool.Get(acc.SpoolID); m == nil || m.Metadata["price"] != "5" {
		t.Fatalf("put metadata: %+v", m)
	}
}

func TestUploadErrors(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{MaxBytes: 1000})
	body := func() io.Reader { return strings.NewReader("x") }
	tests := []struct {
		name, method, path, token string
		body                      io.Reader
		hdr                       map[string]string
		status                    int
		code                      string
	}{
		{"no token", "PUT", "/v1/assets/generic/a", "", body(), nil, 401, "unauthorized"},
		{"read token", "PUT", "/v1/assets/generic/a", testReader, body(), nil, 403, "forbidden"},
		{"unknown type", "PUT", "/v1/assets/photos/a.png", testIngest, body(), nil, 400, "unknown_type"},
		{"control character", "PUT", "/v1/assets/generic/a%01b", testIngest, body(), nil, 400, "bad_name"},
		{"backslash", "PUT", "/v1/assets/generic/a%5C..%5Cb", testIngest, body(), nil, 400, "bad_name"},
		{"hidden", "PUT", "/v1/assets/generic/.env", testIngest, body(), nil, 400, "bad_name"},
		{"bad metadata", "PUT", "/v1/assets/generic/a", testIngest, body(), map[string]string{"Dab-Metadata": "[1]"}, 400, "bad_metadata"},
		{"metadata shadowing dab's sha256", "PUT", "/v1/assets/generic/a", testIngest, body(), map[string]string{"Dab-Metadata": `{"sha256":"00"}`}, 400, "bad_metadata"},
		{"metadata shadowing the owner", "PUT", "/v1/assets/generic/a", testIngest, body(), map[string]string{"Dab-Metadata": `{"Owner":"mallory"}`}, 400, "bad_metadata"},
		{"metadata shadowing the listing", "PUT", "/v1/assets/generic/a", testIngest, body(), map[string]string{"Dab-Metadata": `{"listing":"1"}`}, 400, "bad_metadata"},
		{"metadata key not a header name", "PUT", "/v1/assets/generic/a", testIngest, body(), map[string]string{"Dab-Metadata": `{"a b":"1"}`}, 400, "bad_metadata"},
		{"price not a number", "PUT", "/v1/assets/generic/a", testIngest, body(), map[string]string{"Dab-Metadata": `{"price":"abc"}`}, 400, "bad_price"},
		{"negative price", "PUT", "/v1/assets/generic/a", testIngest, body(), map[string]string{"Dab-Metadata": `{"price":"-1"}`}, 400, "bad_price"},
		{"price in exponent form", "PUT", "/v1/assets/generic/a", testIngest, body(), map[string]string{"Dab-Metadata": `{"price":1e3}`}, 400, "bad_price"},
		{"price above the maximum", "PUT", "/v1/assets/generic/a", testIngest, body(), map[string]string{"Dab-Metadata": `{"price":"1000000000000001"}`}, 400, "bad_price"},
		{"name segment over 255 bytes", "PUT", "/v1/assets/generic/" + strings.Repeat("n", 256), testIngest, body(), nil, 400, "bad_name"},
		{"bidi override", "PUT", "/v1/assets/generic/invoice%E2%80%AEgnp.exe", testIngest, body(), nil, 400, "bad_name"},
		{"zero-width space", "PUT", "/v1/assets/generic/a%E2%80%8Bb", testIngest, body(), nil, 400, "bad_name"},
		{"no-break space", "PUT", "/v1/assets/generic/a%C2%A0b", testIngest, body(), nil, 400, "bad_name"},
		{"byte order mark", "PUT", "/v1/assets/generic/%EF%BB%BFa", testIngest, body(), nil, 400, "bad_name"},
		{"too large by length", "PUT", "/v1/assets/generic/big", testIngest, strings.NewReader(strings.Repeat("x", 1001)), nil, 413, "too_large"},
		{"not multipart", "POST", "/v1/assets", testIngest, body(), map[string]string{"Content-Type": "text/plain"}, 400, "not_multipart"},
		{"bad idempotency key", "PUT", "/v1/assets/generic/k", testIngest, body(), map[string]string{"Idempotency-Key": "has space"}, 400, "bad_idempotency_key"},
		{"unknown task", "GET", "/v1/tasks/upload-nope", testReader, nil, nil, 404, "task_not_found"},
		{"unknown asset", "GET", "/v1/assets/0123456789abcdef0123", testReader, nil, nil, 404, "asset_not_found"},
		{"bad cursor", "GET", "/v1/assets?cursor=zzz", testReader, nil, nil, 400, "bad_cursor"},
		{"bad limit", "GET", "/v1/assets?limit=0", testReader, nil, nil, 400, "bad_limit"},
	}
	for _, tt := range tests {
		a := h.do(t, tt.method, tt.path, tt.token, tt.body, tt.hdr)
		if a.Status != tt.status || a.ErrorCode() != tt.code {
			t.Errorf("%s: %d %s, want %d %s", tt.name, a.Status, a.Body, tt.status, tt.code)
		}
	}
	// Multipart without a file, and with an unknown type.
	b, ct := form(t, [][2]string{{"type", "cyoa"}}, "", nil, false)
	if a := h.do(t, "POST", "/v1/assets", testIngest, b, map[string]string{"Content-Type": ct}); a.Status != 400 {
		t.Errorf("form without file name: %d %s", a.Status, a.Body)
	}
	b, ct = form(t, [][2]string{{"type", "photos"}}, "a.png", []byte("x"), false)
	if a := h.do(t, "POST", "/v1/assets", testIngest, b, map[string]string{"Content-Type": ct}); a.Status != 400 || !strings.Contains(string(a.Body), "known types are cyoa, generic") {
		t.Errorf("form with unknown type: %d %s", a.Status, a.Body)
	}
	spoolEmpty(t, h.spool)
}

func TestTooLargeChunkedLeavesNothing(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{MaxBytes: 64 << 10})
	for _, method := range []string{"PUT", "POST"} {
		pr, pw := io.Pipe()
		mw := multipart.NewWriter(pw)
		go func() {
			chunk := bytes.Repeat([]byte("z"), 16<<10)
			var w io.Writer = pw
			if method == "POST" {
				w, _ = mw.CreateFormFile("file", "big.bin")
			}
			for range 10 {
				if _, err := w.Write(chunk); err != nil {
					break
				}
			}
			if method == "POST" {
				mw.Close()
			}
			pw.Close()
		}()
		path := "/v1/assets/generic/big.bin"
		if method == "POST" {
			path = "/v1/assets"
		}
		req, _ := http.NewRequest(method, h.srv.URL+path, pr)
		req.ContentLength = -1 // chunked: the server must count
		req.Header.Set("Authorization", "Bearer "+testIngest)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "DAB_MAX_UPLOAD_BYTES") {
			t.Fatalf("%s chunked past the limit: %d %s", method, resp.StatusCode, b)
		}
	}
	spoolEmpty(t, h.spool)
}

func TestInterruptedUploadLeavesNothing(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT /v1/assets/generic/cut.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n", testIngest)
	conn.Write(bytes.Repeat([]byte("a"), 40000))
	incoming := func() int { des, _ := os.ReadDir(filepath.Join(h.spool.Dir(), ".incoming")); return len(des) }
	h.eventually(5*time.Second, "the upload to be written in the spool", func() bool { return incoming() == 1 })
	conn.Close() // the client goes away mid-body
	h.eventually(5*time.Second, "the cut upload to be cleaned up", func() bool {
		return incoming() == 0 && strings.Contains(h.logs.String(), `"status":400`)
	})
	spoolEmpty(t, h.spool)
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{})
	put := func(content string) answer {
		return h.do(t, "PUT", "/v1/assets/generic/same.txt", testIngest, strings.NewReader(content), map[string]string{"Idempotency-Key": "order-42"})
	}
	first, second := put("v1"), put("v1")
	if first.Status != 202 || second.Status != 202 || !bytes.Equal(first.Body, second.Body) || second.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s / %d %s", first.Status, first.Body, second.Status, second.Body)
	}
	if third := put("v2"); third.Status != 409 || third.ErrorCode() != "idempotency_conflict" {
		t.Fatalf("other content, same key: %d %s", third.Status, third.Body)
	}
	if n := len(spooltest.Entries(t, h.spool)); n != 1 {
		t.Fatalf("%d spool entries, want 1", n)
	}
	if h.queued() != 1 {
		t.Fatalf("%d tasks, want 1", h.queued())
	}
}

func TestConcurrencyLimit(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{MaxConcurrent: 1})
	pr, pw := io.Pipe()
	started := make(chan struct{})
	done := make(chan answer)
	go func() {
		pw.Write([]byte("first bytes"))
		close(started)
	}()
	go func() { done <- h.do(t, "PUT", "/v1/assets/generic/slow.bin", testIngest, pr, nil) }()
	<-started
	h.eventually(10*time.Second, "the first upload to hold the slot", func() bool { return len(h.intake.slots) == 1 })
	busy := h.do(t, "PUT", "/v1/assets/generic/other.bin", testIngest, strings.NewReader("x"), nil)
	if busy.Status != 503 || busy.ErrorCode() != "busy" || busy.Header.Get("Retry-After") == "" {
		t.Fatalf("second upload: %d %s", busy.Status, busy.Body)
	}
	pw.Close()
	if a := <-done; a.Status != 202 {
		t.Fatalf("first upload: %d %s", a.Status, a.Body)
	}
}

func TestQueriesAndReadiness(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{})
	for i := range 3 {
		h.assets.Put(context.Background(), asset.Record{Name: "n", Type: "cyoa", Path: fmt.Sprint(i), S3Bucket: "b", S3Key: fmt.Sprintf("cyoa/%d", i), SHA256: "s"})
	}
	var page asset.Page
	a := h.do(t, "GET", "/v1/assets?type=cyoa&limit=2", testReader, nil, nil)
	a.JSON(t, &page)
	if a.Status != 200 || len(page.Records) != 2 || page.Next == "" {
		t.Fatalf("page 1: %d %s", a.Status, a.Body)
	}
	a = h.do(t, "GET", "/v1/assets?type=cyoa&limit=2&cursor="+page.Next, testReader, nil, nil)
	var page2 asset.Page
	a.JSON(t, &page2)
	if len(page2.Records) != 1 || page2.Next != "" {
		t.Fatalf("page 2: %s", a.Body)
	}
	var rec map[string]any
	a = h.do(t, "GET", "/v1/assets/"+page.Records[0].ID, testReader, nil, nil)
	a.JSON(t, &rec)
	if rec["id"] != page.Records[0].ID || rec["size"] == nil {
		t.Fatalf("asset: %s", a.Body)
	}
	if a := h.do(t, "GET", "/healthz", "", nil, nil); a.Status != 200 {
		t.Fatalf("healthz %d", a.Status)
	}
	if a := h.do(t, "GET", "/readyz", "", nil, nil); a.Status != 200 || !strings.Contains(string(a.Body), `"bucket": "ok"`) {
		t.Fatalf("readyz %d %s", a.Status, a.Body)
	}
	h.redis.Stop()
	if a := h.do(t, "GET", "/readyz", "", nil, nil); a.Status != 503 || !strings.Contains(string(a.Body), `"redis": "dial tcp`) {
		t.Fatalf("readyz with Redis down: %d %s", a.Status, a.Body)
	}
}

// TestOpenAPIListsEveryRoute keeps the API document in step with the router.

// TestTusResumeWithRealClient drives tus-js-client (Node) against the
// server: the transfer is cut off part-way, a new client resumes it from the
// server's offset, and the finished file lands in the spool, queued.
func TestTusResumeWithRealClient(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("the tus test needs Node.js: apt-get install -y nodejs npm, then npm ci --prefix watcher/intake/testdata/tus (or run `make test`)")
	}
	if _, err := os.Stat("testdata/tus/node_modules/tus-js-client"); err != nil {
		t.Fatal("the tus test needs tus-js-client: npm ci --prefix watcher/intake/testdata/tus (or run `make test`)")
	}
	h := setupHTTP(t, Config{})
	data := bytes.Repeat([]byte("0123456789abcdef"), 192<<10) // 3 MiB
	file := filepath.Join(t.TempDir(), "NODE_resumed.png")
	os.WriteFile(file, data, 0o600)
	run := func(cut int, meta string) map[string]any {
		cmd := exec.Command(node, "testdata/tus/upload.mjs", h.srv.URL+"/v1/uploads/", testIngest, file, fmt.Sprint(cut), meta)
		out, err := cmd.CombinedOutput()
		var res map[string]any
		if jerr := json.Unmarshal(lastLine(out), &res); jerr != nil {
			t.Fatalf("tus client: %v %v\n%s", err, jerr, out)
		}
		return res
	}
	res := run(1<<20, `{"type":"cyoa","metadata":"{\"price\":\"7\"}"}`)
	if res["error"] != nil || res["resumed"] != true || res["cut_at"] == nil {
		t.Fatalf("tus client: %v", res)
	}
	id, _ := res["task_id"].(string)
	if !regexp.MustCompile(`^upload-[0-9a-f]{28}$`).MatchString(id) {
		t.Fatalf("no task id in the final answer: %v", res)
	}
	m, err := h.spool.Get(strings.TrimPrefix(id, "upload-"))
	if err != nil || m.Size != int64(len(data)) || m.SHA256 != harness.SHA256Hex(data) || m.Key() != "cyoa/NODE_resumed.png" || m.Metadata["price"] != "7" {
		t.Fatalf("spooled %+v, %v", m, err)
	}
	if _, err := h.insp.GetTaskInfo(task.QueueUploads, id); err != nil {
		t.Fatalf("task not queued: %v", err)
	}
	// Bad names are refused before any byte is sent.
	if res := run(0, `{"type":"photos"}`); res["error"] == nil || !strings.Contains(fmt.Sprint(res["error"]), "known types") {
		t.Fatalf("unknown type over tus: %v", res)
	}
	// Without a token: refused.
	req, _ := http.NewRequest("POST", h.srv.URL+"/v1/uploads/", nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", "10")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("tus without token: %d", resp.StatusCode)
	}
}

func lastLine(b []byte) []byte {
	sc := bufio.NewScanner(bytes.NewReader(b))
	var last []byte
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			last = append([]byte(nil), sc.Bytes()...)
		}
	}
	return last
}

// FuzzParseMetadata: any metadata text is either refused with a 400 or
// becomes a map of keys that are valid metadata names, none of them one of
// dab's own record fields (which it would shadow).
func FuzzParseMetadata(f *testing.F) {
	for _, s := range []string{`{"price":"10"}`, `{"n":1,"o":{"a":[1]}}`, `[]`, `null`, `{"":1}`, "",
		`{"sha256":"00"}`, `{"listing":"1"}`, `{"Owner":"x"}`, `{"a":1,"a":2}`, `{"a‮b":1}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		md, err := parseMetadata(raw)
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) || he.status != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		for k := range md {
			if err := naming.CheckMetadataKey(k); err != nil {
				t.Fatalf("key %q accepted: %v", k, err)
			}
		}
	})
}
