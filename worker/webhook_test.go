package worker_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
	"github.com/dab-assets/dab/internal/webhook"
	"github.com/dab-assets/dab/worker"
	"github.com/dab-assets/dab/worker/task"
)

// hook is a webhook receiver on loopback: it answers the statuses in turn
// (the last from then on) and keeps the requests.
type hook struct {
	*httptest.Server
	secret  string
	mu      sync.Mutex
	answers []int
	got     []delivered
}

type delivered struct {
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

func newHook(t *testing.T, answers ...int) *hook {
	t.Helper()
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(len(answers)*31 + i)
	}
	h := &hook{answers: answers, secret: webhook.SecretPrefix + base64.StdEncoding.EncodeToString(b)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got = append(h.got, delivered{Headers: map[string]string{"webhook-id": r.Header.Get("webhook-id"),
			"webhook-timestamp": r.Header.Get("webhook-timestamp"), "webhook-signature": r.Header.Get("webhook-signature")}, Body: string(body)})
		status := h.answers[min(len(h.got), len(h.answers))-1]
		h.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) requests() []delivered {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]delivered(nil), h.got...)
}

// hooksBundle is a worker with webhook endpoints and a dispatcher.
type hooksBundle struct {
	*bundle
	led       *ledger.Store
	endpoints []webhook.Endpoint
	log       *harness.LogBuffer
}

// startHooks runs a worker and a dispatcher for the endpoints of file (one
// "URL SECRET [TYPES]" a line, loopback allowed) until the test ends;
// retries come after retryDelay.
func startHooks(t *testing.T, file string, retryDelay time.Duration) *hooksBundle {
	t.Helper()
	return startHooksWith(t, file, retryDelay, true)
}

// startHooksWith is startHooks; without dispatch it runs the worker only.
func startHooksWith(t *testing.T, file string, retryDelay time.Duration, dispatch bool) *hooksBundle {
	t.Helper()
	b := &hooksBundle{bundle: setup(t), log: &harness.LogBuffer{}}
	b.led = ledger.New(b.rdb, "dab:", "house")
	eps, err := webhook.Parse(strings.NewReader(file), "hooks", webhook.Options{AllowHTTP: []string{"127.0.0.1", "localhost"}, AllowPrivate: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	b.endpoints = eps
	sender := webhook.NewSender(eps, webhook.SenderOptions{Timeout: 2 * time.Second})
	t.Cleanup(sender.Close)
	c := storagetest.Options(b.s3)
	logger := slog.New(slog.NewJSONHandler(b.log, nil))
	w, err := worker.New(b.rdb, worker.Config{Concurrency: 4, Logger: logger, FailedDir: b.failed,
		WebhookRetryDelay: func(int) time.Duration { return retryDelay }}, worker.Deps{
		Spool: b.spool, Storage: storage.New(storagetest.Client(t, c), c), Assets: b.assets, Plugins: builtin.Registry(), Ledger: b.led, Webhooks: sender,
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := worker.NewDispatcher(b.rdb, worker.DispatcherConfig{Prefix: "dab:", Endpoints: eps, Queue: b.client, Logger: logger,
		Block: 200 * time.Millisecond, ClaimEvery: 300 * time.Millisecond, ClaimIdle: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// The group starts at the stream's end: it must exist before the
	// events the test makes.
	if err := d.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	runs := []func(context.Context) error{w.Run}
	if dispatch {
		runs = append(runs, d.Run)
	}
	done := make(chan error, len(runs))
	for _, run := range runs {
		go func() { done <- run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range runs {
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	})
	return b
}

func lastEventID(t *testing.T, b *bundle) string {
	t.Helper()
	msgs, err := b.rdb.XRevRangeN(context.Background(), event.Keys{Prefix: "dab:"}.Stream(), "+", "-", 1).Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("no event: %v", err)
	}
	return msgs[0].ID
}

// TestWebhookDeliveries: an event goes to every endpoint that takes its
// type, signed; a receiver that answers 500 gets it again until it takes
// it; one that answers 410 is given up at once (archived, status in the
// error); an endpoint whose name resolves to a private address is refused
// when connecting and archived; an endpoint that does not take the type
// gets nothing. The deliveries verify in Go and with the Standard
// Webhooks reference library.
func TestWebhookDeliveries(t *testing.T) {
	t.Parallel()
	ok, flaky, gone, private, other := newHook(t, 200), newHook(t, 500, 503, 204), newHook(t, 410), newHook(t, 200), newHook(t, 200)
	privateURL := strings.Replace(private.URL, "127.0.0.1", "localhost", 1)
	b := startHooks(t, strings.Join([]string{
		ok.URL + "/ok " + ok.secret,
		flaky.URL + "/flaky " + flaky.secret + " credits.granted",
		gone.URL + "/gone " + gone.secret,
		privateURL + "/private " + private.secret,
		other.URL + "/other " + other.secret + " purchase.succeeded",
	}, "\n"), 100*time.Millisecond)
	ctx := context.Background()
	if _, err := b.led.Grant(ctx, "g-1", "alice", 42); err != nil {
		t.Fatal(err)
	}
	eventID := lastEventID(t, b.bundle)
	id := func(n int) string { return task.WebhookTaskID(eventID, b.endpoints[n].ID) }

	b.waitTask(t, task.QueueWebhooks, id(0), asynq.TaskStateCompleted)
	if info := b.waitTask(t, task.QueueWebhooks, id(1), asynq.TaskStateCompleted); info.Retried != 2 {
		t.Fatalf("the flaky receiver's delivery completed after %d retries, want 2", info.Retried)
	}
	if info := b.waitTask(t, task.QueueWebhooks, id(2), asynq.TaskStateArchived); info.Retried != 0 || !strings.Contains(info.LastErr, "answered 410 Gone") {
		t.Fatalf("410: archived after %d retries with %q", info.Retried, info.LastErr)
	}
	if info := b.waitTask(t, task.QueueWebhooks, id(3), asynq.TaskStateArchived); info.Retried != 0 || !strings.Contains(info.LastErr, "DAB_WEBHOOKS_ALLOW_PRIVATE") {
		t.Fatalf("a private address: archived after %d retries with %q", info.Retried, info.LastErr)
	}
	if _, err := b.insp.GetTaskInfo(task.QueueWebhooks, id(4)); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("an endpoint that does not take credits.granted got a delivery: %v", err)
	}
	if n := len(private.requests()) + len(other.requests()); n != 0 {
		t.Fatalf("%d requests reached the private and the uninterested endpoints", n)
	}
	for _, tt := range []struct {
		h *hook
		n int
	}{{ok, 1}, {flaky, 3}, {gone, 1}} {
		got := tt.h.requests()
		if len(got) != tt.n {
			t.Fatalf("%s got %d requests, want %d", tt.h.URL, len(got), tt.n)
		}
		for _, r := range got {
			var e event.Event
			if err := json.Unmarshal([]byte(r.Body), &e); err != nil || e.ID != eventID || e.Type != event.TypeCreditsGranted || r.Headers["webhook-id"] != eventID {
				t.Fatalf("delivery %+v: %v", r, err)
			}
			h := http.Header{}
			for k, v := range r.Headers {
				h.Set(k, v)
			}
			if err := webhook.Verify(tt.h.secret, h, []byte(r.Body), time.Now(), 5*time.Minute); err != nil {
				t.Fatalf("a delivery does not verify: %v", err)
			}
		}
		for i, res := range verifyWithNode(t, tt.h.secret, got) {
			if !res.OK {
				t.Fatalf("standardwebhooks refused delivery %d to %s: %s", i, tt.h.URL, res.Error)
			}
		}
	}
	// The same delivery queued again is the same task: refused, not sent twice.
	body, _ := json.Marshal(map[string]any{"id": eventID, "type": event.TypeCreditsGranted})
	tk, err := task.NewWebhook(task.WebhookPayload{Endpoint: b.endpoints[0].ID, Event: body})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Enqueue(tk); !task.IsAlreadyQueued(err) {
		t.Fatalf("a second delivery of the same event to the same endpoint: %v, want a task ID conflict", err)
	}
	if !strings.Contains(b.log.String(), `"msg":"webhook.delivered"`) || strings.Contains(b.log.String(), strings.TrimPrefix(ok.secret, webhook.SecretPrefix)) {
		t.Fatal("no webhook.delivered in the log, or a secret in it")
	}

	// The console's view: each endpoint's deliveries, and a resend.
	admin := worker.NewWebhookAdmin(b.insp, b.client, event.NewLog(b.rdb, "dab:"), b.endpoints)
	for n, want := range map[int]string{0: "completed", 1: "completed", 2: "archived", 3: "archived"} {
		ds, err := admin.Deliveries(ctx, b.endpoints[n].ID, 10)
		if err != nil || len(ds) != 1 || ds[0].State != want || ds[0].EventID != eventID || ds[0].EventType != event.TypeCreditsGranted || ds[0].At.IsZero() {
			t.Fatalf("deliveries to endpoint %d: %+v %v, want one %s", n+1, ds, err, want)
		}
	}
	if ds, _ := admin.Deliveries(ctx, b.endpoints[2].ID, 10); !strings.Contains(ds[0].LastError, "410") || ds[0].Attempts != 1 {
		t.Fatalf("the archived delivery: %+v", ds[0])
	}
	// Resent, it runs again (a new task ID) and arrives with the same
	// webhook-id, also once the event is gone from the stream (trimmed):
	// the first delivery's task still holds it.
	for i, trim := range []bool{false, true} {
		if trim {
			if err := b.rdb.XDel(ctx, event.Keys{Prefix: "dab:"}.Stream(), eventID).Err(); err != nil {
				t.Fatal(err)
			}
		}
		taskID, err := admin.Resend(ctx, b.endpoints[0].ID, eventID)
		if err != nil || taskID == id(0) {
			t.Fatalf("resend: %s %v", taskID, err)
		}
		b.waitTask(t, task.QueueWebhooks, taskID, asynq.TaskStateCompleted)
		got := ok.requests()
		if len(got) != 2+i || got[1+i].Headers["webhook-id"] != eventID || got[1+i].Body != got[0].Body {
			t.Fatalf("resent delivery %d: %+v", i, got)
		}
		if ds, _ := admin.Deliveries(ctx, b.endpoints[0].ID, 10); len(ds) != 2+i || !ds[0].Resend {
			t.Fatalf("deliveries after a resend: %+v", ds)
		}
	}
	for _, tt := range []struct{ endpoint, event string }{{b.endpoints[0].ID, "1-1"}, {b.endpoints[0].ID, "x"}, {"0000000000000000", eventID}, {b.endpoints[4].ID, eventID}} {
		if _, err := admin.Resend(ctx, tt.endpoint, tt.event); err == nil {
			t.Errorf("resend of %s to %s was queued", tt.event, tt.endpoint)
		}
	}
}

// TestDispatcherLosesNoEvent: events a dispatcher read and never
// acknowledged (it crashed after queueing their deliveries, before XACK)
// are taken over by another after ClaimIdle and, their tasks existing,
// delivered once; an event whose delivery Redis refused stays pending and
// is dispatched again by the same dispatcher.
func TestDispatcherLosesNoEvent(t *testing.T) {
	t.Parallel()
	rcv := newHook(t, 200)
	b := startHooksWith(t, rcv.URL+"/in "+rcv.secret, time.Second, false)
	ctx := context.Background()
	stream := event.Keys{Prefix: "dab:"}.Stream()
	crashed, err := worker.NewDispatcher(b.rdb, worker.DispatcherConfig{Prefix: "dab:", Endpoints: b.endpoints,
		Queue: &queueThenFail{q: b.client}, Consumer: "crashed", Block: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := crashed.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := b.led.Grant(ctx, fmt.Sprint("g-", i), "alice", 5); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := crashed.Read(ctx); err == nil {
		t.Fatal("the crashed dispatcher's queue did not fail")
	}
	p, err := b.rdb.XPending(ctx, stream, worker.WebhookGroup).Result()
	if err != nil || p.Count != 3 || p.Consumers["crashed"] != 3 {
		t.Fatalf("pending %+v %v, want the 3 events with the crashed dispatcher", p, err)
	}
	// The live dispatcher's queue refuses its first task: that event stays
	// pending with it until its next round.
	live, err := worker.NewDispatcher(b.rdb, worker.DispatcherConfig{Prefix: "dab:", Endpoints: b.endpoints,
		Queue: &failFirst{q: b.client}, Consumer: "live", Block: 100 * time.Millisecond,
		ClaimEvery: 200 * time.Millisecond, ClaimIdle: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- live.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	if _, err := b.led.Grant(ctx, "g-live", "bob", 5); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, "four deliveries and nothing pending", func() bool {
		p, err := b.rdb.XPending(ctx, stream, worker.WebhookGroup).Result()
		return len(rcv.requests()) >= 4 && err == nil && p.Count == 0
	}, func() string {
		p, _ := b.rdb.XPending(ctx, stream, worker.WebhookGroup).Result()
		return fmt.Sprintf("%d deliveries, pending %+v", len(rcv.requests()), p)
	})
	// Further claim rounds find nothing left to dispatch (run here, so the
	// test knows they ran instead of sleeping through some).
	for round := range 2 {
		if n, err := live.Recover(ctx); err != nil || n != 0 {
			t.Fatalf("claim round %d dispatched %d events (%v), want none", round, n, err)
		}
	}
	got := map[string]int{}
	for _, r := range rcv.requests() {
		got[r.Headers["webhook-id"]]++
	}
	if len(got) != 4 {
		t.Fatalf("deliveries %v, want 4 events", got)
	}
	for id, n := range got {
		if n != 1 {
			t.Fatalf("event %s delivered %d times", id, n)
		}
	}
}

// queueThenFail queues each task and then reports an error, as a
// dispatcher that crashed between queueing and acknowledging.
type queueThenFail struct{ q task.Enqueuer }

func (f *queueThenFail) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if _, err := f.q.EnqueueContext(ctx, t, opts...); err != nil {
		return nil, err
	}
	return nil, errors.New("crashed before acknowledging")
}

// failFirst refuses its first task, as a Redis that was away a moment.
type failFirst struct {
	q      task.Enqueuer
	mu     sync.Mutex
	failed bool
}

func (f *failFirst) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	f.mu.Lock()
	first := !f.failed
	f.failed = true
	f.mu.Unlock()
	if first {
		return nil, errors.New("redis refused the task")
	}
	return f.q.EnqueueContext(ctx, t, opts...)
}

// verifyWithNode runs the Standard Webhooks reference verifier (npm
// standardwebhooks, installed by `make deps` in internal/webhook/testdata).
func verifyWithNode(t *testing.T, secret string, got []delivered) []struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
} {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("the webhook tests need Node.js: apt-get install -y nodejs npm, then npm ci --prefix internal/webhook/testdata/standardwebhooks (or run `make test`)")
	}
	dir := filepath.Join("..", "internal", "webhook", "testdata", "standardwebhooks")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks")); err != nil {
		t.Fatal("the webhook tests need the standardwebhooks package: npm ci --prefix internal/webhook/testdata/standardwebhooks (or run `make test`)")
	}
	in, _ := json.Marshal(map[string]any{"secret": secret, "deliveries": got})
	cmd := exec.Command(node, filepath.Join(dir, "verify.mjs"))
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node verify.mjs: %v: %s", err, out)
	}
	var res []struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(got) {
		t.Fatalf("verify.mjs printed %s: %v", out, err)
	}
	return res
}

// uploadFailures are the upload.failed events in the stream.
func (b *bundle) uploadFailures(t *testing.T) []event.UploadFailure {
	t.Helper()
	msgs, err := b.rdb.XRange(context.Background(), event.Keys{Prefix: "dab:"}.Stream(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []event.UploadFailure
	for _, m := range msgs {
		e, accounts, err := event.FromMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != event.TypeUploadFailed {
			continue
		}
		if len(accounts) != 0 {
			t.Fatalf("upload.failed about accounts %v", accounts)
		}
		var f event.UploadFailure
		if err := json.Unmarshal(e.Data, &f); err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	return out
}

// TestUploadFailedEventOnce: an upload given up writes one upload.failed
// event with the reason and the fix; re-running the archived task, which
// fails the same way, writes none.
func TestUploadFailedEventOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bad := storagetest.Options(b.s3)
	bad.SecretAccessKey = "not-the-secret"
	client, _ := storage.NewClient(context.Background(), bad)
	w, err := worker.New(b.rdb, worker.Config{Concurrency: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), FailedDir: b.failed},
		worker.Deps{Spool: b.spool, Storage: storage.New(client, bad), Assets: b.assets, Plugins: builtin.Registry(), Ledger: ledger.New(b.rdb, "dab:", "house")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	m := b.spoolBytes(t, "generic", "x.bin", randomBytes(100, 9))
	id := task.UploadTaskID(m.ID)
	b.waitState(t, id, asynq.TaskStateArchived)
	for run := 0; run < 2; run++ {
		if run > 0 {
			if err := b.insp.RunTask(task.QueueUploads, id); err != nil {
				t.Fatal(err)
			}
			// RunTask moved it back to pending: archived again means re-run.
			b.waitState(t, id, asynq.TaskStateArchived)
		}
		fs := b.uploadFailures(t)
		if len(fs) != 1 {
			t.Fatalf("run %d: %d upload.failed events, want 1", run, len(fs))
		}
		f := fs[0]
		if f.TaskID != id || f.SpoolID != m.ID || f.Code != "SignatureDoesNotMatch" || f.Remedy != "rerun" || f.Key != "generic/x.bin" ||
			f.SHA256 != m.SHA256 || !strings.Contains(f.Reason, "check AWS_SECRET_ACCESS_KEY") || !strings.Contains(f.Fix, "re-run the task") {
			t.Fatalf("run %d: event %+v", run, f)
		}
		if strings.Contains(f.Reason, "not-the-secret") {
			t.Fatal("the event quotes the secret key")
		}
	}
}

// TestWebhookRetrySchedule: the first retry comes within 10 seconds, the
// delays grow, and task.WebhookMaxRetry of them add up to about a day.
func TestWebhookRetrySchedule(t *testing.T) {
	t.Parallel()
	for range 100 {
		var total, prev time.Duration
		for n := range task.WebhookMaxRetry {
			d := worker.WebhookRetryDelay(n)
			if n == 0 && (d < 4*time.Second || d > 6*time.Second) {
				t.Fatalf("first retry after %s, want about 5s", d)
			}
			if d < prev*8/10 {
				t.Fatalf("retry %d after %s, shorter than the one before (%s)", n, d, prev)
			}
			total, prev = total+d, d
		}
		if total < 21*time.Hour || total > 27*time.Hour {
			t.Fatalf("the retries add up to %s, want about a day", total)
		}
	}
}
