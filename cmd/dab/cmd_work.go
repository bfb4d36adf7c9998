package main

import (
	"context"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/metrics"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/webhook"
	"github.com/dab-assets/dab/watcher"
	"github.com/dab-assets/dab/worker"
	"github.com/dab-assets/dab/worker/task"
)

// runWork runs a worker until SIGINT or SIGTERM.
func runWork(ctx context.Context, e *env, args []string) error {
	return runRoles(ctx, e, "work", args, roles{worker: true})
}

// runWatch runs the intake (drop-folder watcher and HTTP API) until SIGINT
// or SIGTERM.
func runWatch(ctx context.Context, e *env, args []string) error {
	return runRoles(ctx, e, "watch", args, roles{watcher: true, http: true})
}

// runServe runs the watcher, the HTTP API and the worker in one process.
func runServe(ctx context.Context, e *env, args []string) error {
	return runRoles(ctx, e, "serve", args, roles{worker: true, watcher: true, http: true})
}

// roles says what one process runs.
type roles struct{ worker, watcher, http bool }

func runRoles(ctx context.Context, e *env, name string, args []string, r roles) error {
	a, err := e.parse(name, args, nil)
	if err != nil {
		return err
	}
	if len(a.args) > 0 {
		return fmt.Errorf("%w: dab %s takes no arguments, got %q", errUsage, name, a.args)
	}
	return a.serve(ctx, r, nil)
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
			runs = append(runs, func(ctx context.Context) error { a.requeueOrphans(ctx, sp, client); return nil })
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
	if err := worker.Check(ctx, rdb, config.RedactURL(a.cfg.RedisURL), st); err != nil {
		return nil, fmt.Errorf("startup check: %w", config.RedactError(err, a.cfg.RedisURL, a.cfg.S3.Endpoint))
	}
	sp, err := a.spool()
	if err != nil {
		return nil, err
	}
	endpoints, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	a.log.Info("worker.config", "redis", config.RedactURL(a.cfg.RedisURL), "store", config.RedactText(st.String(), a.cfg.S3.Endpoint), "upload_queue", a.uploadQueue(),
		"spool", sp.Dir(), "concurrency", a.cfg.Concurrency, "key_prefix", a.cfg.KeyPrefix,
		"failed_dir", a.cfg.FailedRoot(), "done_dir", a.cfg.DoneDir, "webhook_endpoints", len(endpoints))
	// Purchases first (someone waits for them), then this host's uploads
	// and webhook deliveries; a worker without endpoints leaves the
	// deliveries to the workers that have them.
	queues := worker.Queues(a.uploadQueue())
	var sender *webhook.Sender
	if len(endpoints) > 0 {
		sender = webhook.NewSender(endpoints, webhook.SenderOptions{})
		a.closers = append(a.closers, sender.Close)
	} else {
		delete(queues, task.QueueWebhooks)
	}
	return worker.New(rdb, worker.Config{
		Concurrency: a.cfg.Concurrency, ShutdownTimeout: a.cfg.ShutdownTimeout, Logger: a.log,
		FailedDir: a.cfg.FailedRoot(), DoneDir: a.cfg.DoneDir, Metrics: a.metrics, Queues: queues,
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
func (a *app) requeueOrphans(ctx context.Context, sp *spool.Spool, q watcher.Enqueuer) {
	t := time.NewTicker(a.cfg.RescanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n, err := watcher.RequeueOrphans(ctx, sp, q, a.uploadQueue(), now)
			if n > 0 {
				a.metrics.Requeued.Add(float64(n))
				a.log.Warn("spool.requeued", "entries", n, "note", "their tasks were gone from Redis (a lost, restored or failed-over Redis): queued again")
			}
			if err != nil && ctx.Err() == nil {
				a.log.Warn("spool.requeue_failed", "error", config.RedactError(err, a.cfg.RedisURL).Error())
			}
		}
	}
}
