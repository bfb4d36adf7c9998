package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/metrics"
	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/redact"
	"github.com/dab-assets/dab/internal/redisbatch"
	"github.com/dab-assets/dab/internal/redisconn"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/webhook"
	"github.com/dab-assets/dab/watcher"
	"github.com/dab-assets/dab/worker/task"
)

// app is a parsed command line: configuration, logger and the positional
// arguments, with helpers that open what a command needs.
type app struct {
	*env
	cfg  *config.Config
	log  *slog.Logger
	args []string
	role role
	// dev is the state of the running `dab dev` this command follows, if any.
	dev *config.DevState
	// httpURL is where this process's HTTP API listens, once bound.
	httpURL string
	// closers run when the process stops.
	closers []func()
	// metrics of this process (set by serve).
	metrics *metrics.Metrics
	// watcher of this process, if it runs one (its problems show in the console).
	watcher *watcher.Watcher
	// server is this process's HTTP API once built: its route table is the
	// one list the router, the OpenAPI check and the auth matrix test read.
	server *api.Server
	// endpoints are the webhook endpoints of DAB_WEBHOOKS_FILE, read once
	// (webhooks); endpointsRead says they were.
	endpoints     []webhook.Endpoint
	endpointsRead bool
}

// role says what kind of command runs, for what it needs at start.
type role int

const (
	// roleClient: commands that run once; go-redis's reconnect messages
	// are debug noise for them.
	roleClient role = iota
	// roleServer: work, watch and serve run until stopped; go-redis's
	// messages are warnings.
	roleServer
	// roleDev: `dab dev`, a server that starts its own Redis and store.
	roleDev
)

// newApp validates the configuration loader holds (environment, then the
// flags already parsed into it), builds the logger and, except for dev,
// follows a running `dab dev` when no Redis, bucket or endpoint was given.
func newApp(e *env, loader *config.Loader, args []string, r role) (*app, error) {
	cfg, err := loader.Load()
	if err != nil {
		return nil, err
	}
	a := &app{env: e, cfg: cfg, args: args, role: r}
	if r != roleDev && cfg.UsesDev() {
		dataDir, st, err := config.FindDevState(cfg.DataDir, !cfg.Explicit("DAB_DATA_DIR"))
		if err != nil {
			return nil, err
		}
		if st != nil {
			// Its spool is where dab upload puts files; and a dab dev
			// that is not running is reported by its folder.
			cfg.DataDir = dataDir
		}
		if st != nil && config.DevRunning(dataDir) {
			cfg.ApplyDev(st)
			a.dev = st
		}
	}
	format := cfg.LogFormat
	if r == roleDev && !cfg.Explicit("DAB_LOG_FORMAT") && isTerminal(e.stderr) {
		format = "text" // a person watches
	}
	a.log = newLogger(e.stderr, format, cfg.LogLevel)
	return a, nil
}

// newLogger logs to w in format (json or text) from level on; config has
// validated both.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	w = visibleWriter{w}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// visibleWriter writes log lines with every character a name may not have
// (naming.RuneProblem: bidi overrides, zero-width and other invisible
// characters, spaces other than the ASCII one, control characters) as a
// \uXXXX escape (two, a surrogate pair, above U+FFFF). Left as they are, a
// file name with U+202E reads reversed in a terminal or log viewer, and two
// names that differ look alike. It works on the written line, so keys,
// groups and values of every kind are covered; in a JSON line such a
// character can only be inside a string, where the escape is JSON's own and
// decodes back to the name as it is.
type visibleWriter struct{ w io.Writer }

func (v visibleWriter) Write(p []byte) (int, error) {
	i := 0
	for i < len(p) && p[i] < utf8.RuneSelf && p[i] != 0x7f {
		i++
	}
	if i == len(p) {
		return v.w.Write(p) // ASCII: both handlers escape its other control characters
	}
	out := make([]byte, 0, len(p)+32)
	out = append(out, p[:i]...)
	for i < len(p) {
		r, size := utf8.DecodeRune(p[i:])
		if (size > 1 || r == 0x7f) && naming.RuneProblem(r) != "" {
			if r > 0xffff {
				hi, lo := utf16.EncodeRune(r)
				out = fmt.Appendf(out, "\\u%04x\\u%04x", hi, lo)
			} else {
				out = fmt.Appendf(out, "\\u%04x", r)
			}
		} else {
			out = append(out, p[i:i+size]...)
		}
		i += size
	}
	if _, err := v.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// visibleText is s as a terminal should show it: every character a name
// may not have (naming.RuneProblem: controls, newlines and tabs included)
// and every byte that is not UTF-8 are written as escapes (\x01, \x0a,
// \u202e, \xff), so that a message quoting a file name, a record or a
// server's answer shows it as it is, and it cannot reorder, hide or add
// lines.
func visibleText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case naming.RuneProblem(r) == "":
			b.WriteString(s[i : i+size])
		case r < utf8.RuneSelf:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r > 0xffff:
			fmt.Fprintf(&b, `\U%08x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}

// outf is fmt.Fprintf for what a command prints as text: every string
// argument goes through visibleText, since any may hold a file name, a
// record's field or a server's words. The format is the command's own.
func outf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, format, visibleArgs(args)...)
}

// outln is fmt.Fprintln with outf's escaping.
func outln(w io.Writer, args ...any) {
	fmt.Fprintln(w, visibleArgs(args)...)
}

func visibleArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = visibleText(v)
		case []byte:
			out[i] = visibleText(string(v))
		case json.RawMessage:
			out[i] = visibleText(string(v))
		case error:
			out[i] = visibleText(v.Error())
		case fmt.Stringer:
			out[i] = visibleText(v.String())
		default:
			out[i] = a
		}
	}
	return out
}

// connectRedis opens a client for DAB_REDIS_URL and checks that Redis
// answers; the error names the URL (password hidden) and the fix. The caller
// closes the client.
func (a *app) connectRedis(ctx context.Context) (redis.UniversalClient, error) {
	if a.cfg.RedisURL == "" {
		return nil, a.noRedis()
	}
	// go-redis reports reconnects and Sentinel failovers through its own
	// logger (one per process), which prints bare lines to stderr: they go
	// to dab's log.
	redis.SetLogger(redisLogger{log: a.log, secret: a.cfg.RedisURL, quiet: a.role == roleClient})
	rdb, _, err := redisconn.Open(redisconn.Options{URL: a.cfg.RedisURL, Mode: a.cfg.RedisMode, CAFile: a.cfg.RedisCAFile})
	if err != nil {
		return nil, err
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		hint := "start Redis or fix DAB_REDIS_URL"
		if a.dev != nil {
			hint = fmt.Sprintf("the `dab dev` of %s (pid %d) does not answer: restart it", a.cfg.DataDir, a.dev.PID)
		}
		return nil, fmt.Errorf("redis at %s is unreachable: %w: %s", redact.URL(a.cfg.RedisURL), redact.Error(err, a.cfg.RedisURL), hint)
	}
	// One batcher for the process: every script (dab's stores, asynq's
	// enqueue, fetch and completion) given at about the same time shares a
	// round trip with the others. Its batches go on a client of their own
	// that never sends a command again (redisbatch decides what goes
	// again); made here, it follows a Sentinel failover as rdb does.
	pipe, _, err := redisconn.Open(redisconn.Options{URL: a.cfg.RedisURL, Mode: a.cfg.RedisMode, CAFile: a.cfg.RedisCAFile, NoRetries: true})
	if err != nil {
		rdb.Close()
		return nil, err
	}
	return redisbatch.WrapWithPipe(rdb, pipe), nil
}

// noRedis says, without trying any Redis, that none is configured and
// both ways to give one. dab never guesses a Redis: a guess (the old
// 127.0.0.1:6379) made commands "succeed" on a Redis no worker reads.
func (a *app) noRedis() error {
	dir, err := filepath.Abs(a.cfg.DataDir)
	if err != nil {
		dir = a.cfg.DataDir
	}
	why := "no `dab dev` runs with the data folder " + dir
	switch st, _ := config.ReadDevState(a.cfg.DataDir); {
	case !a.cfg.UsesDev():
		why = "AWS_S3_BUCKET or AWS_ENDPOINT_URL_S3 is given, so no `dab dev` is followed"
	case st != nil:
		why = "the `dab dev` of the data folder " + dir + " is not running"
	}
	return fmt.Errorf("DAB_REDIS_URL is not set and %s: set DAB_REDIS_URL (or --redis-url) to the Redis of your dab, "+
		"or run this from the folder where `dab dev` runs, or set DAB_DATA_DIR to its data folder (`dab dev` prints the export line)", why)
}

func (a *app) storage(ctx context.Context) (*storage.Store, error) {
	if err := a.cfg.RequireS3(); err != nil {
		return nil, err
	}
	client, err := storage.NewClient(ctx, a.cfg.S3)
	if err != nil {
		return nil, err
	}
	return storage.New(client, a.cfg.S3), nil
}

func (a *app) spool() (*spool.Spool, error) {
	sp, err := spool.Open(filepath.Join(a.cfg.DataDir, "spool"))
	if err != nil {
		return nil, err
	}
	sp.SetShared(a.cfg.SpoolShared)
	return sp, nil
}

// assets is the asset store on rdb; its records' events are trimmed by
// DAB_EVENTS_MAXLEN and DAB_EVENTS_MAX_AGE.
func (a *app) assets(rdb redis.UniversalClient) *asset.Store {
	return asset.NewStoreWithOptions(rdb, a.cfg.KeyPrefix, asset.Options{Events: a.cfg.EventTrim()})
}

// webhooks reads DAB_WEBHOOKS_FILE (once): a line that is not an endpoint
// stops dab at start, with the line's number and what is wrong.
func (a *app) webhooks() ([]webhook.Endpoint, error) {
	if !a.endpointsRead {
		eps, err := webhook.Load(a.cfg.WebhooksFile, a.cfg.WebhookOptions())
		if err != nil {
			return nil, err
		}
		a.endpoints, a.endpointsRead = eps, true
	}
	return a.endpoints, nil
}

// uploadQueue is the queue of this host's upload tasks (one shared queue
// when the spool is on shared storage).
func (a *app) uploadQueue() string {
	if a.cfg.SpoolShared {
		return task.UploadQueue("")
	}
	return task.UploadQueue(a.cfg.HostID)
}

// ledger is the ledger on rdb; with DAB_REDIS_MIN_REPLICAS its writes
// wait for that many replicas (config has validated the bounds).
func (a *app) ledger(rdb redis.UniversalClient) *ledger.Store {
	return ledger.NewWithOptions(rdb, a.cfg.KeyPrefix, a.cfg.HouseAccount,
		ledger.Options{MinReplicas: a.cfg.RedisMinReplicas, ReplicaTimeout: a.cfg.RedisReplicaTimeout, Events: a.cfg.EventTrim()})
}

// warnIfNotDurable says loudly when the Redis holding queues, records and
// credits keeps nothing on disk: a restart would lose them.
func (a *app) warnIfNotDurable(ctx context.Context, rdb redis.UniversalClient) {
	aof, fsync, err := ledger.Durability(ctx, rdb)
	switch {
	case err != nil:
		a.log.Warn("redis.durability_unknown", "error", redact.Text(err.Error(), a.cfg.RedisURL), "note", "could not read Redis persistence settings; make sure appendonly is on (see README, Redis for money)")
	case !aof:
		a.log.Warn("redis.not_durable", "redis", redact.URL(a.cfg.RedisURL),
			"warning", "Redis runs WITHOUT the append-only file: a restart loses queued tasks, asset records and every credit balance. Set appendonly yes and appendfsync everysec (or always) - see README, Redis for money")
	case fsync == "no":
		a.log.Warn("redis.weak_fsync", "warning", "appendfsync no: the OS decides when writes reach disk; a power cut can lose recent purchases. Use everysec or always")
	}
}

func (a *app) asynqClient(rdb redis.UniversalClient) *asynq.Client {
	return asynq.NewClientFromRedisClient(rdb)
}

// redisLogger routes go-redis's messages (dial failures, a new Sentinel
// master) to dab's structured log, with the Redis URL's password hidden.
// For a client command (quiet) they are debug lines: its own error says
// what failed, and a reconnect the command survived is no news to its user.
type redisLogger struct {
	log    *slog.Logger
	secret string
	quiet  bool
}

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := redact.Error(errors.New(fmt.Sprintf(format, v...)), l.secret).Error()
	level := slog.LevelWarn
	if l.quiet {
		level = slog.LevelDebug
	}
	l.log.Log(ctx, level, "redis.client", "detail", msg)
}
