// Package config holds dab's settings: one table of settings, each read from an
// environment variable and overridable by a flag of the same meaning, then
// validated with errors that name the variable and say what to do.
package config

import (
	"errors"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/redact"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/webhook"
)

// Defaults of the HTTP intake's protections.
const (
	// MinUploadRateDefault: 1 KiB/s is far below any working link, and
	// makes holding an upload slot cost a client a real transfer.
	MinUploadRateDefault int64 = 1 << 10
	// MinFreeBytesDefault keeps room for the spool's manifests and the
	// system when uploads fill a disk.
	MinFreeBytesDefault int64 = 256 << 20
)

// Config is the effective configuration of one dab process.
type Config struct {
	// RedisURL locates the Redis that holds the queues, asset records and
	// ledger. No default: every command but `dab dev` (which starts its
	// own) needs it, given or taken from a running `dab dev`.
	RedisURL string
	// RedisMode is single, sentinel or cluster.
	RedisMode string
	// RedisCAFile is a PEM file of CAs for rediss:// with a private CA.
	RedisCAFile string
	// RedisMinReplicas is how many Redis replicas must acknowledge each
	// ledger write and asset record (WAIT) before dab reports it done; 0 (the default)
	// waits for none. ledger.Options.MinReplicas, 0 to ledger.MinReplicasMax.
	RedisMinReplicas int
	// RedisReplicaTimeout bounds each wait for replicas. Default
	// ledger.ReplicaTimeoutDefault, from ledger.ReplicaTimeoutMin to
	// ledger.ReplicaTimeoutMax.
	RedisReplicaTimeout time.Duration
	// KeyPrefix starts every Redis key dab owns (asynq's own keys start with
	// "asynq:"). Default "dab:".
	KeyPrefix string
	// DataDir holds the spool and local state. Default ./dab-data.
	DataDir string
	// Concurrency is the number of tasks of each queue one worker runs at
	// once. Default 16x CPUs, at least 32.
	Concurrency int
	// Fetchers is the number of asynq servers one worker runs side by
	// side for each queue, sharing its Concurrency; worker.FetchersDefault.
	Fetchers int
	// ShutdownTimeout bounds how long a stopping worker waits for running
	// tasks before handing them back to the queue. Default
	// worker.ShutdownTimeoutDefault (config sits below the worker, so a
	// test in cmd/dab checks that Settings says the same).
	ShutdownTimeout time.Duration

	// DropDir is the folder the watcher takes files from. Default ./drop.
	DropDir string
	// DoneDir, when set, receives the original of every uploaded file
	// (DoneDir/<type>/<path>); when empty the spool copy is deleted.
	DoneDir string
	// FailedDir receives files that cannot be uploaded, each with a
	// <name>.error.json; empty means <DataDir>/failed.
	FailedDir string
	// Settle is how long a file must stay unchanged before it is taken. Default 1s.
	Settle time.Duration
	// RescanInterval is how often the watcher walks the whole drop folder
	// (the safety net for lost events). Default 30s.
	RescanInterval time.Duration
	// JournalInterval is how often a worker copies new ledger entries to
	// the bucket's journal (at most this much of the books can be lost with
	// Redis). Default 5s.
	JournalInterval time.Duration
	// Poll makes the watcher rely on rescans only, for network filesystems
	// that send no events; RescanInterval then defaults to 2s.
	Poll bool

	// HTTPAddr is where the API listens (watch, serve, dev). Default 127.0.0.1:8080.
	HTTPAddr string
	// AdminToken is a bearer token with every scope.
	AdminToken string
	// TokensFile lists further tokens, one "scope[,scope] token" per line.
	TokensFile string
	// Insecure allows listening beyond loopback without any token.
	Insecure bool
	// MaxUploadBytes is the largest file the HTTP intake accepts. Default 5 GiB.
	MaxUploadBytes int64
	// MaxConcurrentUploads bounds HTTP uploads in progress. Default 16.
	MaxConcurrentUploads int
	// MinUploadRate is the slowest an HTTP upload body may arrive, in
	// bytes per second averaged over 20 s windows; 0 turns the check off.
	// Default MinUploadRateDefault.
	MinUploadRate int64
	// MinFreeBytes is kept free on the spool's disk: uploads that would
	// leave less are refused (507) and /readyz is not ready. Default
	// MinFreeBytesDefault; 0 turns the floor off.
	MinFreeBytes int64
	// TusExpiry removes resumable uploads that received nothing for this
	// long. Default intake.TusExpiryDefault (24h).
	TusExpiry time.Duration
	// TrustedProxies are the reverse proxies whose X-Forwarded-For dab
	// believes when it needs a client's address (the throttle on failed
	// logins). Empty (the default) means the connection's own address is
	// the client's and X-Forwarded-For is ignored: anyone can write it.
	TrustedProxies []netip.Prefix
	// PrometheusAddr is a Prometheus server the monitor's metrics page queries.
	PrometheusAddr string
	// MetricsAddr, when set, makes `dab work` serve /metrics there.
	MetricsAddr string
	// HouseAccount receives the price of assets that have no owner yet.
	HouseAccount string
	// DownloadTTL is the lifetime of the presigned S3 URLs that downloads
	// and image previews hand out. Default storage.URLTTLDefault, from
	// storage.URLTTLMin to storage.URLTTLMax.
	DownloadTTL time.Duration
	// HostID names this host's upload queue (uploads:<host id>): its spool
	// is local, so only its workers may upload its files. Default: the host name.
	HostID string
	// SpoolShared says the spool is on storage every worker reads: then all
	// uploads use the one queue "uploads".
	SpoolShared bool
	// Server and Token make client commands go through a dab HTTP API
	// instead of the local spool and Redis.
	Server, Token string
	// LogFormat is json or text; LogLevel debug, info, warn or error.
	LogFormat, LogLevel string

	// ImportMaxBytes caps the file one import fetches. Default 5 GiB.
	ImportMaxBytes int64
	// ImportAllowHTTP and ImportAllowPrivate name hosts an import may fetch
	// from over plain http://, and at loopback or private addresses.
	ImportAllowHTTP, ImportAllowPrivate []string
	// ImportCAFile is a PEM file of extra CAs for https:// import sources.
	ImportCAFile string
	// ImportS3Buckets are the buckets s3:// imports may read ("*": any but
	// dab's own). Empty: none.
	ImportS3Buckets []string

	// EventsMaxLen is about how many events the events stream keeps
	// (XADD MAXLEN ~). Default event.MaxLenDefault, from event.MaxLenMin
	// to event.MaxLenMax.
	EventsMaxLen int
	// EventsMaxAge, when not 0, drops events older than this from the
	// stream too (XTRIM MINID ~). Default 0 (keep EventsMaxLen events of
	// any age); at least event.MaxAgeMin.
	EventsMaxAge time.Duration
	// WebhooksFile lists the webhook endpoints, one "URL SECRET [TYPES]"
	// a line (webhook.Parse); empty: no webhooks.
	WebhooksFile string
	// WebhooksAllowHTTP are hosts whose endpoints may be http:// (loopback
	// development); all others must be https://.
	WebhooksAllowHTTP []string
	// WebhooksAllowPrivate are hosts whose endpoints may be at private,
	// loopback, link-local or other non-public addresses; no other
	// endpoint is ever connected to at such an address.
	WebhooksAllowPrivate []string

	S3 S3
	// Sources says where each setting's value came from (default, env, flag,
	// dev), keyed by environment variable name; `dab config` prints it.
	Sources map[string]string
}

// S3 holds the object store settings (AWS_* and DAB_S3_*, DAB_MULTIPART_*,
// DAB_PART_*): they are the store's own options, documented and defaulted
// by package storage, so there is nothing to convert and nothing to drift.
type S3 = storage.Options

// Groups of settings, in the order `dab help config` shows them.
const (
	GroupRedis   = "Redis"
	GroupWorker  = "Spool and worker"
	GroupDrop    = "Drop folder (watch, serve, dev)"
	GroupHTTP    = "HTTP API (watch, serve, dev)"
	GroupClient  = "Client commands"
	GroupS3      = "S3"
	GroupLogs    = "Logs"
	GroupImports = "Imports (dab:import tasks)"
	GroupEvents  = "Events and webhooks"
)

// Setting describes one configurable value.
type Setting struct {
	Env     string
	Flag    string
	Default string
	Usage   string
	// Group is the part of dab the setting is about (a Group* constant).
	Group  string
	Secret bool
	// URL marks a value that is a URL: it is shown through redact.URL, which
	// masks the secrets a URL can carry (userinfo, ?password= and the like).
	URL bool
	get func(*Config) string
	set func(*Config, string) error
}

// EventTrim is how the events stream is trimmed (DAB_EVENTS_MAXLEN,
// DAB_EVENTS_MAX_AGE).
func (c *Config) EventTrim() event.Trim {
	return event.Trim{MaxLen: c.EventsMaxLen, MaxAge: c.EventsMaxAge}
}

// WebhookOptions are where webhook endpoints may be
// (DAB_WEBHOOKS_ALLOW_HTTP, DAB_WEBHOOKS_ALLOW_PRIVATE).
func (c *Config) WebhookOptions() webhook.Options {
	return webhook.Options{AllowHTTP: c.WebhooksAllowHTTP, AllowPrivate: c.WebhooksAllowPrivate}
}

// FailedRoot is the failed folder: DAB_FAILED_DIR or <data dir>/failed.
func (c *Config) FailedRoot() string {
	if c.FailedDir != "" {
		return c.FailedDir
	}
	return filepath.Join(c.DataDir, "failed")
}

// RequireS3 checks what a role that talks to S3 needs beyond validate.
func (c *Config) RequireS3() error {
	if c.S3.Bucket == "" {
		return errors.New("AWS_S3_BUCKET is not set: name the bucket that holds the assets (or run `dab dev`, which starts a local store)")
	}
	return nil
}

// Line is one row of `dab config`.
type Line struct {
	Env, Flag, Value, Source string
}

// Effective lists every setting with its value, secrets masked.
func (c *Config) Effective() []Line {
	var out []Line
	for _, s := range Settings() {
		v := s.get(c)
		switch {
		case s.URL:
			v = redact.URL(v)
		case s.Secret && v != "":
			v = redact.Mask(v)
		}
		out = append(out, Line{Env: s.Env, Flag: "--" + s.Flag, Value: v, Source: c.Sources[s.Env]})
	}
	return out
}
