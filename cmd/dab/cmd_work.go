package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/metrics"
	"github.com/dab-assets/dab/internal/netguard"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/internal/redact"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/webhook"
	"github.com/dab-assets/dab/watcher"
	"github.com/dab-assets/dab/worker"
	"github.com/dab-assets/dab/worker/task"
)

// roles says what one process runs.
type roles struct{ worker, watcher, http bool }

func (c *cli) workCmd() *cobra.Command {
	return c.roleCmd(roles{worker: true}, &cobra.Command{
		Use:   "work",
		Short: "run a worker: upload spooled files to S3, run plugins, record assets, apply purchases",
		Long: `Run a worker until SIGINT or SIGTERM. It checks Redis and the bucket at
start (and says which one failed and why), then applies purchases and
uploads this host's spooled files; running tasks get DAB_SHUTDOWN_TIMEOUT
to finish when it stops, then go back to the queue.`,
		Example: `  DAB_REDIS_URL=redis://10.0.0.5:6379/0 AWS_S3_BUCKET=assets dab work
  dab work --concurrency 64 --metrics-addr 127.0.0.1:9100   # settings as flags`,
	})
}

func (c *cli) watchCmd() *cobra.Command {
	return c.roleCmd(roles{watcher: true, http: true}, &cobra.Command{
		Use:   "watch",
		Short: "run the intake: the drop-folder watcher and the HTTP API with console and monitor",
		Long: `Run the intake until SIGINT or SIGTERM: the watcher takes complete files from
DAB_DROP_DIR/<type>/, and the HTTP API on DAB_HTTP_ADDR takes uploads and
serves the console and the Asynq monitor. A worker (dab work) uploads
what they spool.`,
		Example: `  DAB_REDIS_URL=redis://10.0.0.5:6379/0 DAB_DROP_DIR=/srv/drop dab watch
  dab watch --http-addr 0.0.0.0:8080 --tokens-file /etc/dab/tokens`,
	})
}

func (c *cli) serveCmd() *cobra.Command {
	return c.roleCmd(roles{worker: true, watcher: true, http: true}, &cobra.Command{
		Use:   "serve",
		Short: "run the watcher, the HTTP API and a worker in one process",
		Long: `Run what dab watch and dab work run, in one process, until SIGINT or
SIGTERM: for a single host.`,
		Example: `  DAB_REDIS_URL=redis://127.0.0.1:6379/0 AWS_S3_BUCKET=assets dab serve`,
	})
}

// roleCmd completes cmd as a server role that runs r until stopped.
func (c *cli) roleCmd(r roles, cmd *cobra.Command) *cobra.Command {
	cmd.Args = noArgs
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		a, err := c.app(args, roleServer)
		if err != nil {
			return err
		}
		return a.serve(cmd.Context(), r, nil)
	}
	return cmd
}

// serve connects to Redis, builds the roles (checking what each needs at
// start), calls ready (if set) and runs them until ctx ends or one fails.
func (a *app) serve(ctx context.Context, r roles, ready func() error) error {
	rdb, err := a.connectRedis(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	defer func() {
		for _, c := range a.closers {
			c()
		}
	}()
	a.warnIfNotDurable(ctx, rdb)
	a.metrics = metrics.New()
	a.metrics.RegisterQueues(asynq.NewInspectorFromRedisClient(rdb))
	if sp, err := a.spool(); err == nil {
		a.metrics.RegisterSpool(sp.Dir())
	}
	endpoints, err := a.webhooks()
	if err != nil {
		return err
	}
	var runs []func(context.Context) error
	if r.worker {
		w, err := a.newWorker(ctx, rdb)
		if err != nil {
			return err
		}
		runs = append(runs, w.Run)
		// Every worker also turns events into webhook deliveries (a
		// consumer group shares them out).
		if len(endpoints) > 0 {
			d, err := worker.NewDispatcher(rdb, worker.DispatcherConfig{Prefix: a.cfg.KeyPrefix, Endpoints: endpoints,
				Queue: a.asynqClient(rdb), Logger: a.log})
			if err != nil {
				return err
			}
			runs = append(runs, d.Run)
		}
		// The books, copied to the bucket every DAB_JOURNAL_INTERVAL.
		if st, err := a.storage(ctx); err == nil {
			runs = append(runs, func(ctx context.Context) error { a.runJournal(ctx, rdb, st); return nil })
		}
	}
	if r.watcher {
		wt, err := a.newWatcher(rdb)
		if err != nil {
			return err
		}
		a.metrics.RegisterWatcher(func() metrics.WatchStats { return metrics.WatchStats(wt.Stats()) }, func() int { return len(wt.Problems()) })
		a.watcher = wt
		runs = append(runs, wt.Run)
	}
	if r.worker || r.watcher {
		// Whoever holds the spool queues again the entries whose task Redis
		// lost, every rescan interval, without a restart.
		if sp, err := a.spool(); err == nil {
			client := a.asynqClient(rdb)
			a.closers = append(a.closers, func() { client.Close() })
			runs = append(runs, func(ctx context.Context) error { a.requeueOrphans(ctx, sp, client, task.Lookup{RDB: rdb}); return nil })
		}
	}
	if r.http {
		run, err := a.newHTTP(ctx, rdb)
		if err != nil {
			return err
		}
		runs = append(runs, run)
	} else if a.cfg.MetricsAddr != "" {
		run, err := a.metricsServer()
		if err != nil {
			return err
		}
		runs = append(runs, run)
	}
	if ready != nil {
		if err := ready(); err != nil {
			return err
		}
	}
	return runTogether(ctx, runs...)
}

// runTogether runs each function until ctx ends; when one returns an error
// the others are stopped and that error is returned.
func runTogether(ctx context.Context, runs ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(runs))
	for _, run := range runs {
		go func() {
			err := run(ctx)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for range runs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// newWorker checks Redis and the bucket and builds a worker on them.
func (a *app) newWorker(ctx context.Context, rdb redis.UniversalClient) (*worker.Worker, error) {
	st, err := a.storage(ctx)
	if err != nil {
		return nil, err
	}
	if err := worker.Check(ctx, rdb, redact.URL(a.cfg.RedisURL), st); err != nil {
		return nil, fmt.Errorf("startup check: %w", redact.Error(err, a.cfg.RedisURL, a.cfg.S3.Endpoint))
	}
	sp, err := a.spool()
	if err != nil {
		return nil, err
	}
	endpoints, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	a.log.Info("worker.config", "redis", redact.URL(a.cfg.RedisURL), "store", redact.Text(st.String(), a.cfg.S3.Endpoint), "upload_queue", a.uploadQueue(),
		"spool", sp.Dir(), "concurrency", a.cfg.Concurrency, "key_prefix", a.cfg.KeyPrefix,
		"failed_dir", a.cfg.FailedRoot(), "done_dir", a.cfg.DoneDir, "webhook_endpoints", len(endpoints))
	importTLS, err := netguard.TLSWithCAs(a.cfg.ImportCAFile)
	if err != nil {
		return nil, fmt.Errorf("DAB_IMPORT_CA_FILE: %w", err)
	}
	imports := netguard.New(netguard.Options{AllowHTTP: a.cfg.ImportAllowHTTP, AllowPrivate: a.cfg.ImportAllowPrivate, TLS: importTLS})
	// Purchases, this host's uploads, imports and webhook deliveries, each
	// with slots of its own; a worker without endpoints leaves the
	// deliveries to the workers that have them.
	queues := worker.Queues(a.uploadQueue())
	var sender *webhook.Sender
	if len(endpoints) > 0 {
		sender = webhook.NewSender(endpoints, webhook.SenderOptions{})
		a.closers = append(a.closers, sender.Close)
	} else {
		queues = slices.DeleteFunc(queues, func(q string) bool { return q == task.QueueWebhooks })
	}
	return worker.New(rdb, worker.Config{
		Concurrency: a.cfg.Concurrency, Fetchers: a.cfg.Fetchers, ShutdownTimeout: a.cfg.ShutdownTimeout, Logger: a.log,
		FailedDir: a.cfg.FailedRoot(), DoneDir: a.cfg.DoneDir, Metrics: a.metrics, Queues: queues,
		Imports: imports, ImportMaxBytes: a.cfg.ImportMaxBytes, ImportS3Buckets: a.cfg.ImportS3Buckets,
	}, worker.Deps{Spool: sp, Storage: st, Assets: a.assets(rdb), Plugins: builtin.Registry(), Ledger: a.ledger(rdb),
		Events: event.NewWriter(rdb, a.cfg.KeyPrefix, a.cfg.EventTrim()), Webhooks: sender})
}

// newWatcher builds a drop-folder watcher that enqueues through rdb.
func (a *app) newWatcher(rdb redis.UniversalClient) (*watcher.Watcher, error) {
	sp, err := a.spool()
	if err != nil {
		return nil, err
	}
	return watcher.New(watcher.Config{
		DropDir: a.cfg.DropDir, FailedDir: a.cfg.FailedRoot(), Types: builtin.Registry().Types(),
		Settle: a.cfg.Settle, RescanInterval: a.cfg.RescanInterval, Poll: a.cfg.Poll, Logger: a.log, Queue: a.uploadQueue(),
	}, sp, a.asynqClient(rdb))
}

// requeueOrphans queues, every DAB_RESCAN_INTERVAL until ctx ends, the
// spool entries whose upload task is gone from Redis.
func (a *app) requeueOrphans(ctx context.Context, sp *spool.Spool, q watcher.Enqueuer, tasks watcher.TaskLookup) {
	t := time.NewTicker(a.cfg.RescanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n, err := watcher.RequeueOrphans(ctx, sp, q, tasks, a.uploadQueue(), now)
			if n > 0 {
				a.metrics.Requeued.Add(float64(n))
				a.log.Warn("spool.requeued", "entries", n, "note", "their tasks were gone from Redis (a lost, restored or failed-over Redis): queued again")
			}
			if err != nil && ctx.Err() == nil {
				a.log.Warn("spool.requeue_failed", "error", redact.Error(err, a.cfg.RedisURL).Error())
			}
		}
	}
}
