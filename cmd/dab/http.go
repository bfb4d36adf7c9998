package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"net/http"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/idem"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/internal/redact"
	"github.com/dab-assets/dab/internal/redisconn"
	"github.com/dab-assets/dab/internal/web"
	"github.com/dab-assets/dab/watcher/intake"
	"github.com/dab-assets/dab/watcher/market"
	"github.com/dab-assets/dab/worker"
)

// newHTTP builds the HTTP API and binds its address (so a busy port fails at
// start, and `dab dev` knows the address before it prints it). The returned
// function serves until ctx ends.
func (a *app) newHTTP(ctx context.Context, rdb redis.UniversalClient) (func(context.Context) error, error) {
	tokens, err := api.LoadTokens(a.cfg.AdminToken, a.cfg.TokensFile)
	if err != nil {
		return nil, err
	}
	open := false
	switch {
	case tokens.Empty() && a.cfg.Insecure:
		open = true
		a.log.Warn("http.insecure", "warning", "--insecure: the HTTP API on "+a.cfg.HTTPAddr+" answers anyone with every right (upload, read, purchase, admin); configure DAB_ADMIN_TOKEN or DAB_TOKENS_FILE")
	case tokens.Empty() && !api.IsLoopback(a.cfg.HTTPAddr):
		return nil, fmt.Errorf("DAB_HTTP_ADDR %s is reachable from other machines and no token is configured: set DAB_ADMIN_TOKEN (or DAB_TOKENS_FILE), listen on 127.0.0.1, or pass --insecure to serve without authentication", a.cfg.HTTPAddr)
	case tokens.Empty():
		a.log.Warn("http.no_tokens", "warning", "no token is configured: every API call except /healthz, /readyz and /v1/openapi.json is refused (401); set DAB_ADMIN_TOKEN")
	}
	sp, err := a.spool()
	if err != nil {
		return nil, err
	}
	srv := api.New(tokens, open, a.log)
	a.server = srv
	// Failed logins are throttled per client address; behind a reverse
	// proxy that address comes from X-Forwarded-For, believed only from
	// the proxies DAB_TRUSTED_PROXIES names.
	srv.SetTrustedProxies(a.cfg.TrustedProxies)
	// The checks' errors show on /readyz and in the console's status strip:
	// they must not quote a secret of the Redis URL or the S3 endpoint.
	checks := map[string]func(context.Context) error{
		"redis": func(ctx context.Context) error { return redact.Error(rdb.Ping(ctx).Err(), a.cfg.RedisURL) },
	}
	// Downloads and previews: presigned URLs of the bucket (none without one: 503).
	var downloads *api.Downloads
	if a.cfg.S3.Bucket != "" {
		st, err := a.storage(ctx)
		if err != nil {
			return nil, err
		}
		checks["bucket"] = func(ctx context.Context) error { return redact.Error(st.Check(ctx), a.cfg.S3.Endpoint) }
		ps, err := a.presigner()
		if err != nil {
			return nil, err
		}
		downloads = api.NewDownloads(ps, a.cfg.DownloadTTL)
	}
	api.RegisterQueries(srv, api.QueryDeps{
		Inspector: asynq.NewInspectorFromRedisClient(rdb),
		Assets:    a.assets(rdb), Checks: checks, Describe: describeTask,
	})
	events := event.NewLog(rdb, a.cfg.KeyPrefix)
	api.RegisterEvents(srv, events)
	endpoints, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	uploads, err := intake.New(intake.Config{
		Plugins: builtin.Registry(), MaxBytes: a.cfg.MaxUploadBytes, MaxConcurrent: a.cfg.MaxConcurrentUploads,
		MinRate: a.cfg.MinUploadRate, MinFreeBytes: a.cfg.MinFreeBytes,
		TusDir: filepath.Join(a.cfg.DataDir, "tus"), TusExpiry: a.cfg.TusExpiry, Logger: a.log, Queue: a.uploadQueue(),
	}, sp, a.asynqClient(rdb), idem.New(rdb, a.cfg.KeyPrefix))
	if err != nil {
		return nil, err
	}
	checks["spool_disk"] = uploads.CheckDisk
	if err := uploads.Register(srv); err != nil {
		return nil, err
	}
	api.RegisterDownload(srv, api.DownloadDeps{Assets: a.assets(rdb), Downloads: downloads})
	led := a.ledger(rdb)
	purchases := &market.Purchases{Ledger: led, Queue: a.asynqClient(rdb)}
	api.RegisterLedger(srv, led, a.assets(rdb), purchases)
	api.RegisterImports(srv, &intake.Imports{Queue: a.asynqClient(rdb), Tasks: asynq.NewInspectorFromRedisClient(rdb), Sources: a.importSources()})

	// The Asynq monitor: read-only for read tokens, full for admins.
	spare, connOpt, err := redisconn.Open(redisconn.Options{URL: a.cfg.RedisURL, Mode: a.cfg.RedisMode, CAFile: a.cfg.RedisCAFile})
	if err != nil {
		return nil, err
	}
	spare.Close() // only the connection option is needed: asynqmon dials itself
	monRO := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: connOpt, ReadOnly: true, PrometheusAddress: a.cfg.PrometheusAddr})
	monRW := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: connOpt, PrometheusAddress: a.cfg.PrometheusAddr})
	a.closers = append(a.closers, func() { monRO.Close(); monRW.Close() })
	srv.Handle("", "/monitoring/", api.ScopeRead, web.MonitorBackLink(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := api.CallerOf(r.Context())
		if c.Has(api.ScopeAdmin) {
			monRW.ServeHTTP(w, r)
			return
		}
		if c.Account != "" {
			// The monitor shows every account's purchases and results: it is
			// for operators, not for a token bound to one account.
			api.WriteError(w, http.StatusForbidden, "operators_only", "the monitor shows every account's tasks: use an unbound read token (or admin); this token acts for "+c.Account+" only")
			return
		}
		monRO.ServeHTTP(w, r)
	})), api.Page(), api.Streaming())

	srv.Handle(http.MethodGet, "/metrics", api.ScopeRead, a.metrics.Handler(), api.Page())

	sessions := api.NewSessions(rdb, a.cfg.KeyPrefix)
	srv.SetSessions(sessions)
	if _, err := web.Register(web.Deps{Downloads: downloads,
		Server: srv, Sessions: sessions, Assets: a.assets(rdb), Ledger: led,
		Inspector: asynq.NewInspectorFromRedisClient(rdb), Checks: checks,
		Types: builtin.Registry().Types(), Uploader: uploads, Purchaser: purchases, Monitor: true, Logger: a.log,
		Problems: a.watcherProblems, Bucket: a.cfg.S3.Bucket,
		Webhooks: worker.NewWebhookAdmin(asynq.NewInspectorFromRedisClient(rdb), a.asynqClient(rdb), events, endpoints),
	}); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on DAB_HTTP_ADDR %s: %w (is another dab running? choose another address: --http-addr 127.0.0.1:8081, or DAB_HTTP_ADDR)", a.cfg.HTTPAddr, err)
	}
	a.httpURL = "http://" + ln.Addr().String()
	return func(ctx context.Context) error {
		go uploads.ExpireTus(ctx)
		return api.Serve(ctx, ln, srv.Handler(), a.cfg.ShutdownTimeout, a.log)
	}, nil
}

// metricsServer serves /metrics alone on DAB_METRICS_ADDR (for `dab work`,
// which has no HTTP API). Prometheus scrapes it without a token: bind it to
// an address only the scraper reaches.
func (a *app) metricsServer() (func(context.Context) error, error) {
	ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on DAB_METRICS_ADDR %s: %w", a.cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.Handler())
	return func(ctx context.Context) error {
		return api.Serve(ctx, ln, mux, a.cfg.ShutdownTimeout, a.log)
	}, nil
}

// watcherProblems lists the drop folder's problems for the console.
func (a *app) watcherProblems() []web.Problem {
	if a.watcher == nil {
		return nil
	}
	var out []web.Problem
	for _, p := range a.watcher.Problems() {
		out = append(out, web.Problem{Path: p.Path, Message: p.Message})
	}
	return out
}
