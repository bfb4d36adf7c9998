// Package worker runs dab's Asynq servers and their task handlers: uploads
// of spool entries to S3 (type plugins, then the asset's record), imports
// from URLs, purchases applied to the ledger, and webhook deliveries (with
// the dispatcher that turns events into them). Producers never import this
// package; they use the task contract in worker/task.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/metrics"
	"github.com/dab-assets/dab/internal/netguard"
	"github.com/dab-assets/dab/internal/plugin"
	"github.com/dab-assets/dab/internal/redisbatch"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/webhook"
	"github.com/dab-assets/dab/worker/task"
)

// ShutdownTimeoutDefault is how long a stopping worker lets running tasks
// finish before it hands them back to their queue. Whatever stops the
// process must wait longer before it kills it (deploy/systemd's units wait 40 s).
const ShutdownTimeoutDefault = 25 * time.Second

// Queues are the queues a worker serves: purchases, the uploads of
// uploadQueue, imports and webhook deliveries. Each queue has asynq
// servers of its own (Config.Fetchers of them, with Config.Concurrency
// slots between them): a buyer's purchase never waits for a slot behind a
// burst of uploads, a slow webhook receiver never holds an upload's slot,
// and a fetch is one Redis script (an asynq server serving several queues
// tries them one after the other, in a random order: 2.6 scripts per task
// when only uploads wait).
func Queues(uploadQueue string) []string {
	return []string{task.QueuePurchases, uploadQueue, task.QueueImports, task.QueueWebhooks}
}

// FetchersDefault is how many asynq servers a worker runs side by side for
// each queue. One asynq server fetches its tasks one at a time, a Redis
// round trip each, and starts at most one task per round trip whatever its
// concurrency; on a busy 2-CPU host that made the fetch loop, not the
// uploads, the limit of a burst of small files. Several servers share the
// queue's slots and fetch side by side.
const FetchersDefault = 4

// Config tunes the server.
type Config struct {
	// Concurrency is the number of tasks of each queue run at once
	// (required, > 0).
	Concurrency int
	// Fetchers is the number of asynq servers of each queue, which share
	// its Concurrency and fetch tasks side by side; default
	// FetchersDefault, at most Concurrency.
	Fetchers int
	// Queues are the queues served, each by servers of its own; default
	// Queues(task.QueueUploads).
	Queues []string
	// ShutdownTimeout bounds how long Run waits for running tasks after its
	// context ends; unfinished tasks go back to their queue. Default
	// ShutdownTimeoutDefault.
	ShutdownTimeout time.Duration
	// Logger receives task outcomes and asynq's own messages; default slog.Default().
	Logger *slog.Logger
	// FailedDir receives files that can never be uploaded as they are (a
	// same-name conflict, a file that changed), with <name>.error.json beside
	// them. Required.
	FailedDir string
	// DoneDir, when set, receives the original of every uploaded file; when
	// empty the spool entry is deleted.
	DoneDir string
	// Metrics, when set, receives upload and purchase outcomes.
	Metrics *metrics.Metrics
	// Imports checks and fetches the URLs of imports; nil: this worker
	// imports from S3 only and refuses URLs.
	Imports *netguard.Guard
	// ImportMaxBytes caps what one import fetches; default
	// ImportMaxBytesDefault.
	ImportMaxBytes int64
	// ImportS3Buckets are the buckets s3:// imports may read ("*": any but
	// the worker's own, see task.S3Sources); none when empty.
	ImportS3Buckets []string
	// WebhookRetryDelay, when set, replaces the schedule of webhook
	// retries (WebhookRetryDelay, the function): retried is how often the
	// delivery failed before.
	WebhookRetryDelay func(retried int) time.Duration
}

// Deps are the parts the handlers use.
type Deps struct {
	Spool   *spool.Spool
	Storage *storage.Store
	Assets  *asset.Store
	Plugins *plugin.Registry
	Ledger  *ledger.Store
	// Events writes upload.failed events; default: the stream under the
	// asset store's key prefix, trimmed by default.
	Events *event.Writer
	// Webhooks delivers dab:webhook tasks; nil means this worker has no
	// endpoints (DAB_WEBHOOKS_FILE), and a delivery it is handed is tried
	// again later (by a worker that has them).
	Webhooks *webhook.Sender
}

// Worker is a few Asynq servers for each queue (Config.Fetchers each) with
// dab's handlers.
type Worker struct {
	rdb  redis.UniversalClient
	srvs []*asynq.Server
	mux  *asynq.ServeMux
	deps Deps
	log  *slog.Logger

	failedDir, doneDir string
	metrics            *metrics.Metrics

	imports      *netguard.Guard
	importClient *http.Client
	importMax    int64
	importS3     []string
	importDir    string
	webhookDelay func(retried int) time.Duration
	// results sends the results of tasks finishing at about the same time
	// together (writeTaskResult), in the batches of rdb's Client.
	results *redisbatch.Client
}

// New builds a worker; Run starts it.
func New(rdb redis.UniversalClient, cfg Config, d Deps) (*Worker, error) {
	if cfg.Concurrency <= 0 {
		return nil, errors.New("worker: Concurrency must be at least 1")
	}
	if cfg.FailedDir == "" {
		return nil, errors.New("worker: FailedDir is required")
	}
	if d.Spool == nil || d.Storage == nil || d.Assets == nil || d.Plugins == nil || d.Ledger == nil {
		return nil, errors.New("worker: Deps needs Spool, Storage, Assets, Plugins and Ledger")
	}
	if cfg.Queues == nil {
		cfg.Queues = Queues(task.QueueUploads)
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = ShutdownTimeoutDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ImportMaxBytes <= 0 {
		cfg.ImportMaxBytes = ImportMaxBytesDefault
	}
	if cfg.WebhookRetryDelay == nil {
		cfg.WebhookRetryDelay = WebhookRetryDelay
	}
	// The scripts of tasks running at once (asynq's fetch and completion,
	// records, purchases) and their results share round trips
	// (redisbatch.Client); a client already wrapped (one per process,
	// cmd/dab) shares its batches with the stores.
	batched := redisbatch.Wrap(rdb)
	rdb = batched
	if d.Events == nil {
		d.Events = event.NewWriter(rdb, d.Assets.Keys().Prefix, event.Trim{})
	}
	w := &Worker{rdb: rdb, deps: d, log: cfg.Logger, failedDir: cfg.FailedDir, doneDir: cfg.DoneDir, metrics: cfg.Metrics,
		webhookDelay: cfg.WebhookRetryDelay, results: batched,
		imports: cfg.Imports, importMax: cfg.ImportMaxBytes, importS3: cfg.ImportS3Buckets, importDir: importDirFor(d.Spool.Dir())}
	if cfg.Imports != nil {
		w.importClient = cfg.Imports.Client()
	}
	if err := os.MkdirAll(w.importDir, 0o750); err != nil {
		return nil, fmt.Errorf("worker: imports folder: %w", err)
	}
	if n := removeImportLeftovers(w.importDir); n > 0 {
		w.log.Info("import.leftovers_removed", "files", n, "dir", w.importDir)
	}
	fetchers := cfg.Fetchers
	if fetchers <= 0 {
		fetchers = FetchersDefault
	}
	fetchers = min(fetchers, cfg.Concurrency)
	for _, q := range cfg.Queues {
		for i := range fetchers {
			w.srvs = append(w.srvs, w.newServer(cfg, q, share(cfg.Concurrency, fetchers, i), idleCheck(q, i)))
		}
	}
	w.mux = asynq.NewServeMux()
	kept := newStacks()
	w.mux.HandleFunc(task.TypeUpload, kept.wrap(w.handleUpload))
	w.mux.HandleFunc(task.TypePurchase, kept.wrap(w.handlePurchase))
	w.mux.HandleFunc(task.TypeImport, kept.wrap(w.handleImport))
	w.mux.HandleFunc(task.TypeWebhook, kept.wrap(w.handleWebhook))
	return w, nil
}

// share is server i's part of total concurrency split n ways.
func share(total, n, i int) int {
	part := total / n
	if i < total%n {
		part++
	}
	return part
}

// idleCheck is how long fetcher i of queue naps when the queue is empty
// (asynq sleeps 0.5 to 1.5 times it, default 1 s); each look is a Redis
// script. The first fetcher of uploads and purchases looks every 100 ms,
// so that a dropped file or a purchase starts within about that; the
// others, which only add fetch rate in a burst, join it within a second;
// imports and webhook deliveries, whose tasks take seconds, nap asynq's
// second. An idle worker runs about 34 scripts a second with the default
// four fetchers (it was 160 with every fetcher at 100 ms: 7% of a core for
// dab dev doing nothing, and Redis load that grew with every worker).
func idleCheck(queue string, i int) time.Duration {
	switch {
	case queue == task.QueueImports || queue == task.QueueWebhooks:
		return time.Second
	case i == 0:
		return 100 * time.Millisecond
	}
	return time.Second
}

// newServer is one of the worker's asynq servers, running concurrency tasks
// of queue, napping about idle when the queue is empty.
func (w *Worker) newServer(cfg Config, queue string, concurrency int, idle time.Duration) *asynq.Server {
	return asynq.NewServerFromRedisClient(w.rdb, asynq.Config{
		Concurrency:       concurrency,
		Queues:            map[string]int{queue: 1},
		ShutdownTimeout:   cfg.ShutdownTimeout,
		RetryDelayFunc:    w.retryDelay,
		TaskCheckInterval: idle,
		// Retries become due when their delay is over, but asynq moves
		// them back to their queue only at this interval (default 5s): a
		// webhook's first retry comes after about 5 s, and must come
		// within 10.
		DelayedTaskCheckInterval: time.Second,
		ErrorHandler:             asynq.ErrorHandlerFunc(w.logFailure),
		Logger:                   asynqLogger{cfg.Logger.With("component", "asynq")},
		LogLevel:                 asynq.InfoLevel,
	})
}

// Handler is the worker's task router (for tests that process tasks directly).
func (w *Worker) Handler() asynq.Handler { return w.mux }

// Run processes tasks until ctx ends, then shuts down: it stops taking tasks,
// waits up to ShutdownTimeout for running ones and hands the rest back.
func (w *Worker) Run(ctx context.Context) error {
	for i, srv := range w.srvs {
		if err := srv.Start(w.mux); err != nil {
			w.shutdown(w.srvs[:i])
			return fmt.Errorf("worker: start: %w", err)
		}
	}
	w.log.Info("worker.started", "fetchers", len(w.srvs))
	<-ctx.Done()
	w.log.Info("worker.stopping")
	w.shutdown(w.srvs)
	w.log.Info("worker.stopped")
	return nil
}

// shutdown stops servers side by side: each waits up to ShutdownTimeout
// for its running tasks.
func (w *Worker) shutdown(srvs []*asynq.Server) {
	var wg sync.WaitGroup
	for _, srv := range srvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Shutdown()
		}()
	}
	wg.Wait()
}

// Check verifies that Redis and the bucket are reachable, naming the one
// that is not and why.
func Check(ctx context.Context, rdb redis.UniversalClient, redisURL string, st *storage.Store) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var errs []error
	if err := rdb.Ping(ctx).Err(); err != nil {
		errs = append(errs, fmt.Errorf("redis at %s is unreachable: %w: start Redis or fix DAB_REDIS_URL", redisURL, err))
	}
	if err := st.Check(ctx); err != nil {
		errs = append(errs, fmt.Errorf("bucket check failed: %w", err))
	}
	return errors.Join(errs...)
}

// retryDelay is the delay before retry n+1 of t: webhook deliveries
// follow their own schedule (webhookRetryDelay); other tasks back off
// exponentially (backoff).
func (w *Worker) retryDelay(n int, err error, t *asynq.Task) time.Duration {
	if t.Type() == task.TypeWebhook {
		return webhookRetryDelay(w.webhookDelay, n, err)
	}
	return backoff(n)
}

// backoff backs off exponentially from 2s to 10 minutes, with jitter so
// tasks that failed together (an S3 outage) do not retry together.
func backoff(n int) time.Duration {
	const base, ceiling = 2 * time.Second, 10 * time.Minute
	d := ceiling
	if n < 20 {
		d = min(ceiling, base<<n)
	}
	return d/2 + rand.N(d/2+1)
}

func (w *Worker) logFailure(ctx context.Context, t *asynq.Task, err error) {
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	final := errors.Is(err, asynq.SkipRetry) || retried >= maxRetry
	level := slog.LevelWarn
	if final {
		level = slog.LevelError
	}
	w.log.Log(ctx, level, "task.failed", "task_id", id, "task_type", t.Type(),
		"retried", retried, "max_retry", maxRetry, "archived", final, "error", err.Error())
}

// asynqLogger routes asynq's messages into slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }

// Info is mostly asynq's start and stop chatter ("Starting processing",
// "Send signal TSTP ...", "Exiting"), once for each of the worker's
// servers: sixteen lines with the defaults, saying what worker.started and
// worker.stopped say once. Debug, but for a task handed back to its queue
// at a stop.
func (a asynqLogger) Info(args ...any) {
	msg := fmt.Sprint(args...)
	if strings.HasPrefix(msg, "Pushed task") {
		a.l.Info(msg)
		return
	}
	a.l.Debug(msg)
}
func (a asynqLogger) Warn(args ...any) {
	msg := fmt.Sprint(args...)
	if strings.HasPrefix(msg, "Retry exhausted for task") {
		// asynq says so for every archived task, also one archived at once
		// (SkipRetry); dab's own task.failed line says what happened.
		a.l.Debug(msg)
		return
	}
	a.l.Warn(msg)
}
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)); panic(fmt.Sprint(args...)) }
