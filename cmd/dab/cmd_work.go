package main

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/worker"
)

// runWork runs a worker until SIGINT or SIGTERM.
func runWork(ctx context.Context, e *env, args []string) error {
	a, err := e.parse("work", args, nil)
	if err != nil {
		return err
	}
	if len(a.args) > 0 {
		return fmt.Errorf("%w: dab work takes no arguments, got %q", errUsage, a.args)
	}
	return a.runWorker(ctx, nil)
}

// runWorker connects, checks Redis and the bucket, calls ready (if set) and
// processes tasks until ctx ends.
func (a *app) runWorker(ctx context.Context, ready func() error) error {
	rdb, err := a.connectRedis(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	w, err := a.newWorker(ctx, rdb)
	if err != nil {
		return err
	}
	if ready != nil {
		if err := ready(); err != nil {
			return err
		}
	}
	return w.Run(ctx)
}

// newWorker checks Redis and the bucket and builds a worker on them.
func (a *app) newWorker(ctx context.Context, rdb redis.UniversalClient) (*worker.Worker, error) {
	st, err := a.storage(ctx)
	if err != nil {
		return nil, err
	}
	if err := worker.Check(ctx, rdb, config.RedactURL(a.cfg.RedisURL), st); err != nil {
		return nil, fmt.Errorf("startup check: %w", err)
	}
	sp, err := a.spool()
	if err != nil {
		return nil, err
	}
	a.log.Info("worker.config", "redis", config.RedactURL(a.cfg.RedisURL), "store", st.String(),
		"spool", sp.Dir(), "concurrency", a.cfg.Concurrency, "key_prefix", a.cfg.KeyPrefix)
	return worker.New(rdb, worker.Config{
		Concurrency: a.cfg.Concurrency, ShutdownTimeout: a.cfg.ShutdownTimeout, Logger: a.log,
	}, worker.Deps{Spool: sp, Storage: st, Assets: a.assets(rdb), Plugins: builtin.Registry()})
}
