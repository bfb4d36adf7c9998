// Package config holds dab's settings: one table of settings, each read from an
// environment variable and overridable by a flag of the same meaning, then
// validated with errors that name the variable and say what to do.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/ledger"
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
	// TusExpiryDefault gives a resumable upload a day to come back.
	TusExpiryDefault = 24 * time.Hour
)

// DownloadTTLDefault is the lifetime of presigned download URLs
// (DAB_DOWNLOAD_TTL, storage.URLTTLMin to storage.URLTTLMax): long enough to
// start a large download (S3 checks the signature when a transfer starts,
// not while it runs) and short enough that a URL that leaks is soon
// worthless.
const DownloadTTLDefault = 5 * time.Minute

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
	// Concurrency is the number of tasks one worker runs at once. Default 16x CPUs, at least 32.
	Concurrency int
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
	// long. Default TusExpiryDefault.
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
	// and image previews hand out. Default DownloadTTLDefault, from
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
	// URL marks a value that is a URL: it is shown through RedactURL, which
	// masks the secrets a URL can carry (userinfo, ?password= and the like).
	URL bool
	get func(*Config) string
	set func(*Config, string) error
}

// Settings lists every setting in the order `dab config` and the README show them.
func Settings() []Setting {
	return []Setting{
		{Env: "DAB_REDIS_URL", Group: GroupRedis, Flag: "redis-url", Default: "",
			Usage: "Redis URL (redis:// or rediss://, user:password@ allowed); required, except where a running dab dev is followed (same DAB_DATA_DIR) or by dab dev itself, which starts one", URL: true,
			get: func(c *Config) string { return c.RedisURL }, set: func(c *Config, v string) error { c.RedisURL = v; return nil }},
		{Env: "DAB_REDIS_MODE", Group: GroupRedis, Flag: "redis-mode", Default: "single",
			Usage: "single, sentinel (DAB_REDIS_URL names a sentinel, ?master_name=...) or cluster (any node, more with ?addr=)",
			get:   func(c *Config) string { return c.RedisMode }, set: func(c *Config, v string) error { c.RedisMode = v; return nil }},
		{Env: "DAB_REDIS_CA_FILE", Group: GroupRedis, Flag: "redis-ca-file", Default: "",
			Usage: "PEM file of the CAs that sign the Redis server's certificate (rediss:// with a private CA)",
			get:   func(c *Config) string { return c.RedisCAFile }, set: func(c *Config, v string) error { c.RedisCAFile = v; return nil }},
		{Env: "DAB_REDIS_MIN_REPLICAS", Group: GroupRedis, Flag: "redis-min-replicas", Default: "0",
			Usage: "Redis replicas that must acknowledge each ledger write and asset record (WAIT) before it counts as done (an upload keeps its spooled file until then); 0 waits for none",
			get:   func(c *Config) string { return strconv.Itoa(c.RedisMinReplicas) }, set: intSetter(func(c *Config) *int { return &c.RedisMinReplicas })},
		{Env: "DAB_REDIS_REPLICA_TIMEOUT", Group: GroupRedis, Flag: "redis-replica-timeout", Default: ledger.ReplicaTimeoutDefault.String(),
			Usage: "how long a ledger write waits for DAB_REDIS_MIN_REPLICAS replicas; then a purchase stays pending and is retried, a grant answers 503",
			get:   func(c *Config) string { return c.RedisReplicaTimeout.String() }, set: durationSetter(func(c *Config) *time.Duration { return &c.RedisReplicaTimeout })},
		{Env: "DAB_KEY_PREFIX", Group: GroupRedis, Flag: "key-prefix", Default: "dab:",
			Usage: "prefix of every Redis key dab owns",
			get:   func(c *Config) string { return c.KeyPrefix }, set: func(c *Config, v string) error { c.KeyPrefix = v; return nil }},
		{Env: "DAB_DATA_DIR", Group: GroupWorker, Flag: "data-dir", Default: "./dab-data",
			Usage: "folder for the spool and local state",
			get:   func(c *Config) string { return c.DataDir }, set: func(c *Config, v string) error { c.DataDir = v; return nil }},
		{Env: "DAB_CONCURRENCY", Group: GroupWorker, Flag: "concurrency", Default: strconv.Itoa(defaultConcurrency()),
			Usage: "tasks one worker runs at once",
			get:   func(c *Config) string { return strconv.Itoa(c.Concurrency) }, set: intSetter(func(c *Config) *int { return &c.Concurrency })},
		{Env: "DAB_SHUTDOWN_TIMEOUT", Group: GroupWorker, Flag: "shutdown-timeout", Default: "25s",
			Usage: "how long a stopping worker waits for running tasks before handing them back",
			get:   func(c *Config) string { return c.ShutdownTimeout.String() }, set: durationSetter(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
		{Env: "DAB_DROP_DIR", Group: GroupDrop, Flag: "drop-dir", Default: "./drop",
			Usage: "drop folder the watcher takes files from (drop/<type>/...)",
			get:   func(c *Config) string { return c.DropDir }, set: func(c *Config, v string) error { c.DropDir = v; return nil }},
		{Env: "DAB_DONE_DIR", Group: GroupDrop, Flag: "done-dir", Default: "",
			Usage: "archive of uploaded originals (<done>/<type>/<path>); empty deletes them after upload",
			get:   func(c *Config) string { return c.DoneDir }, set: func(c *Config, v string) error { c.DoneDir = v; return nil }},
		{Env: "DAB_FAILED_DIR", Group: GroupDrop, Flag: "failed-dir", Default: "",
			Usage: "where files that cannot be uploaded go, with <name>.error.json; empty means <data dir>/failed",
			get:   func(c *Config) string { return c.FailedDir }, set: func(c *Config, v string) error { c.FailedDir = v; return nil }},
		{Env: "DAB_SETTLE", Group: GroupDrop, Flag: "settle", Default: "1s",
			Usage: "how long a file must stay unchanged before the watcher takes it",
			get:   func(c *Config) string { return c.Settle.String() }, set: durationSetter(func(c *Config) *time.Duration { return &c.Settle })},
		{Env: "DAB_RESCAN_INTERVAL", Group: GroupDrop, Flag: "rescan-interval", Default: "30s",
			Usage: "how often the watcher walks the whole drop folder (2s by default with DAB_POLL)",
			get:   func(c *Config) string { return c.RescanInterval.String() }, set: durationSetter(func(c *Config) *time.Duration { return &c.RescanInterval })},
		{Env: "DAB_JOURNAL_INTERVAL", Group: GroupWorker, Flag: "journal-interval", Default: "5s",
			Usage: "how often a worker copies new ledger entries to the bucket's journal (journal/; what losing Redis can cost the books)",
			get:   func(c *Config) string { return c.JournalInterval.String() }, set: durationSetter(func(c *Config) *time.Duration { return &c.JournalInterval })},
		{Env: "DAB_POLL", Group: GroupDrop, Flag: "poll", Default: "false",
			Usage: "watch by rescanning only, for network filesystems that send no file events",
			get:   func(c *Config) string { return strconv.FormatBool(c.Poll) }, set: boolSetter(func(c *Config) *bool { return &c.Poll })},
		{Env: "DAB_HTTP_ADDR", Group: GroupHTTP, Flag: "http-addr", Default: "127.0.0.1:8080",
			Usage: "address of the HTTP API (watch, serve, dev); a non-loopback address needs a token",
			get:   func(c *Config) string { return c.HTTPAddr }, set: func(c *Config, v string) error { c.HTTPAddr = v; return nil }},
		{Env: "DAB_ADMIN_TOKEN", Group: GroupHTTP, Flag: "admin-token", Default: "", Secret: true,
			Usage: "bearer token with every scope (at least 16 characters)",
			get:   func(c *Config) string { return c.AdminToken }, set: func(c *Config, v string) error { c.AdminToken = v; return nil }},
		{Env: "DAB_TOKENS_FILE", Group: GroupHTTP, Flag: "tokens-file", Default: "",
			Usage: "file of further tokens, one \"scope[,scope][@account] token\" per line (scopes: ingest, read, purchase (bound to an account), broker, admin)",
			get:   func(c *Config) string { return c.TokensFile }, set: func(c *Config, v string) error { c.TokensFile = v; return nil }},
		{Env: "DAB_INSECURE", Group: GroupHTTP, Flag: "insecure", Default: "false",
			Usage: "allow a non-loopback DAB_HTTP_ADDR without any token (warned at every start)",
			get:   func(c *Config) string { return strconv.FormatBool(c.Insecure) }, set: boolSetter(func(c *Config) *bool { return &c.Insecure })},
		{Env: "DAB_MAX_UPLOAD_BYTES", Group: GroupHTTP, Flag: "max-upload-bytes", Default: "5GiB",
			Usage: "largest file the HTTP intake accepts (413 beyond)",
			get:   func(c *Config) string { return FormatBytes(c.MaxUploadBytes) }, set: bytesSetter(func(c *Config) *int64 { return &c.MaxUploadBytes })},
		{Env: "DAB_MAX_CONCURRENT_UPLOADS", Group: GroupHTTP, Flag: "max-concurrent-uploads", Default: "16",
			Usage: "HTTP uploads in progress at once (503 beyond)",
			get:   func(c *Config) string { return strconv.Itoa(c.MaxConcurrentUploads) }, set: intSetter(func(c *Config) *int { return &c.MaxConcurrentUploads })},
		{Env: "DAB_MIN_UPLOAD_RATE", Group: GroupHTTP, Flag: "min-upload-rate", Default: FormatBytes(MinUploadRateDefault),
			Usage: "slowest an HTTP upload may arrive, in bytes per second over 20 s (408 below; 0: no minimum), so trickling clients cannot hold the upload slots",
			get:   func(c *Config) string { return FormatBytes(c.MinUploadRate) }, set: bytesSetter(func(c *Config) *int64 { return &c.MinUploadRate })},
		{Env: "DAB_MIN_FREE_BYTES", Group: GroupHTTP, Flag: "min-free-bytes", Default: FormatBytes(MinFreeBytesDefault),
			Usage: "space kept free on the spool's disk: uploads that would leave less are refused (507) and /readyz is not ready (0: no floor)",
			get:   func(c *Config) string { return FormatBytes(c.MinFreeBytes) }, set: bytesSetter(func(c *Config) *int64 { return &c.MinFreeBytes })},
		{Env: "DAB_TUS_EXPIRY", Group: GroupHTTP, Flag: "tus-expiry", Default: TusExpiryDefault.String(),
			Usage: "resumable uploads that received nothing for this long are removed",
			get:   func(c *Config) string { return c.TusExpiry.String() }, set: durationSetter(func(c *Config) *time.Duration { return &c.TusExpiry })},
		{Env: "DAB_TRUSTED_PROXIES", Group: GroupHTTP, Flag: "trusted-proxies", Default: "",
			Usage: "comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For names the client (for the throttle on failed logins); empty: use the connection's address",
			get:   func(c *Config) string { return FormatPrefixes(c.TrustedProxies) }, set: prefixesSetter(func(c *Config) *[]netip.Prefix { return &c.TrustedProxies })},
		{Env: "DAB_PROMETHEUS_ADDR", Group: GroupHTTP, Flag: "prometheus-addr", Default: "", URL: true,
			Usage: "URL of a Prometheus server that scrapes dab; the monitor's metrics page queries it",
			get:   func(c *Config) string { return c.PrometheusAddr }, set: func(c *Config, v string) error { c.PrometheusAddr = v; return nil }},
		{Env: "DAB_METRICS_ADDR", Group: GroupWorker, Flag: "metrics-addr", Default: "",
			Usage: "dab work: serve Prometheus metrics on this address (watch/serve/dev serve them at /metrics of DAB_HTTP_ADDR)",
			get:   func(c *Config) string { return c.MetricsAddr }, set: func(c *Config, v string) error { c.MetricsAddr = v; return nil }},
		{Env: "DAB_HOUSE_ACCOUNT", Group: GroupWorker, Flag: "house-account", Default: "house",
			Usage: "account that receives the price of an asset nobody owns yet",
			get:   func(c *Config) string { return c.HouseAccount }, set: func(c *Config, v string) error { c.HouseAccount = v; return nil }},
		{Env: "DAB_DOWNLOAD_TTL", Group: GroupHTTP, Flag: "download-ttl", Default: DownloadTTLDefault.String(),
			Usage: "lifetime of the presigned S3 URLs of downloads and image previews (1s to 168h, S3's limit)",
			get:   func(c *Config) string { return c.DownloadTTL.String() }, set: durationSetter(func(c *Config) *time.Duration { return &c.DownloadTTL })},
		{Env: "DAB_HOST_ID", Group: GroupWorker, Flag: "host-id", Default: defaultHostID(),
			Usage: "this host's name in its upload queue (uploads:<host id>); workers upload only their own host's files",
			get:   func(c *Config) string { return c.HostID }, set: func(c *Config, v string) error { c.HostID = v; return nil }},
		{Env: "DAB_SPOOL_SHARED", Group: GroupWorker, Flag: "spool-shared", Default: "false",
			Usage: "the spool is on storage all workers share: one upload queue for all hosts",
			get:   func(c *Config) string { return strconv.FormatBool(c.SpoolShared) }, set: boolSetter(func(c *Config) *bool { return &c.SpoolShared })},
		{Env: "DAB_SERVER", Group: GroupClient, Flag: "server", Default: "", URL: true,
			Usage: "client commands: URL of a dab HTTP API to use instead of the local spool and Redis",
			get:   func(c *Config) string { return c.Server }, set: func(c *Config, v string) error { c.Server = v; return nil }},
		{Env: "DAB_TOKEN", Group: GroupClient, Flag: "token", Default: "", Secret: true,
			Usage: "client commands: bearer token for DAB_SERVER",
			get:   func(c *Config) string { return c.Token }, set: func(c *Config, v string) error { c.Token = v; return nil }},
		{Env: "DAB_EVENTS_MAXLEN", Group: GroupEvents, Flag: "events-maxlen", Default: strconv.Itoa(event.MaxLenDefault),
			Usage: "about how many events the events stream keeps (older ones are trimmed; approximate: whole stream nodes)",
			get:   func(c *Config) string { return strconv.Itoa(c.EventsMaxLen) }, set: intSetter(func(c *Config) *int { return &c.EventsMaxLen })},
		{Env: "DAB_EVENTS_MAX_AGE", Group: GroupEvents, Flag: "events-max-age", Default: "0s",
			Usage: "when not 0s, events older than this are trimmed from the events stream too (at least 1m)",
			get:   func(c *Config) string { return c.EventsMaxAge.String() }, set: durationSetter(func(c *Config) *time.Duration { return &c.EventsMaxAge })},
		{Env: "DAB_WEBHOOKS_FILE", Group: GroupEvents, Flag: "webhooks-file", Default: "",
			Usage: "file of webhook endpoints, one \"URL SECRET [TYPES]\" per line (SECRET: whsec_ + base64; TYPES: event types, comma-separated, or *)",
			get:   func(c *Config) string { return c.WebhooksFile }, set: func(c *Config, v string) error { c.WebhooksFile = v; return nil }},
		{Env: "DAB_WEBHOOKS_ALLOW_HTTP", Group: GroupEvents, Flag: "webhooks-allow-http", Default: "",
			Usage: "comma-separated hosts whose webhook endpoints may be http:// (loopback development); all others must be https://",
			get:   func(c *Config) string { return strings.Join(c.WebhooksAllowHTTP, ",") }, set: hostsSetter(func(c *Config) *[]string { return &c.WebhooksAllowHTTP })},
		{Env: "DAB_WEBHOOKS_ALLOW_PRIVATE", Group: GroupEvents, Flag: "webhooks-allow-private", Default: "",
			Usage: "comma-separated hosts whose webhook endpoints may be at private, loopback or link-local addresses (refused for every other host)",
			get:   func(c *Config) string { return strings.Join(c.WebhooksAllowPrivate, ",") }, set: hostsSetter(func(c *Config) *[]string { return &c.WebhooksAllowPrivate })},
		{Env: "AWS_S3_BUCKET", Group: GroupS3, Flag: "bucket", Default: "",
			Usage: "S3 bucket that holds the assets",
			get:   func(c *Config) string { return c.S3.Bucket }, set: func(c *Config, v string) error { c.S3.Bucket = v; return nil }},
		{Env: "AWS_REGION", Group: GroupS3, Flag: "region", Default: "",
			Usage: "AWS region (AWS_DEFAULT_REGION is read too); us-east-1 when unset and an endpoint is given",
			get:   func(c *Config) string { return c.S3.Region }, set: func(c *Config, v string) error { c.S3.Region = v; return nil }},
		{Env: "AWS_ACCESS_KEY_ID", Group: GroupS3, Flag: "aws-access-key-id", Default: "",
			Usage: "access key; when unset the AWS default chain (profiles, SSO, instance role) is used",
			get:   func(c *Config) string { return c.S3.AccessKeyID }, set: func(c *Config, v string) error { c.S3.AccessKeyID = v; return nil }},
		{Env: "AWS_SECRET_ACCESS_KEY", Group: GroupS3, Flag: "aws-secret-access-key", Default: "", Secret: true,
			Usage: "secret key that goes with AWS_ACCESS_KEY_ID",
			get:   func(c *Config) string { return c.S3.SecretAccessKey }, set: func(c *Config, v string) error { c.S3.SecretAccessKey = v; return nil }},
		{Env: "AWS_SESSION_TOKEN", Group: GroupS3, Flag: "aws-session-token", Default: "", Secret: true,
			Usage: "session token of temporary credentials",
			get:   func(c *Config) string { return c.S3.SessionToken }, set: func(c *Config, v string) error { c.S3.SessionToken = v; return nil }},
		{Env: "AWS_ENDPOINT_URL_S3", Group: GroupS3, Flag: "s3-endpoint", Default: "", URL: true,
			Usage: "URL of an S3-compatible store; empty for AWS S3",
			get:   func(c *Config) string { return c.S3.Endpoint }, set: func(c *Config, v string) error { c.S3.Endpoint = v; return nil }},
		{Env: "DAB_S3_PATH_STYLE", Group: GroupS3, Flag: "s3-path-style", Default: "false",
			Usage: "path-style bucket addressing (true for most S3-compatible stores)",
			get:   func(c *Config) string { return strconv.FormatBool(c.S3.PathStyle) }, set: boolSetter(func(c *Config) *bool { return &c.S3.PathStyle })},
		{Env: "DAB_S3_CHECKSUM", Group: GroupS3, Flag: "s3-checksum", Default: storage.ChecksumSHA256,
			Usage: "sha256 (the store verifies each upload) or off (for stores that reject checksum headers)",
			get:   func(c *Config) string { return c.S3.ChecksumMode }, set: func(c *Config, v string) error { c.S3.ChecksumMode = v; return nil }},
		{Env: "DAB_MULTIPART_THRESHOLD", Group: GroupS3, Flag: "multipart-threshold", Default: FormatBytes(storage.MultipartThresholdDefault),
			Usage: "objects this size or larger upload in parts",
			get:   func(c *Config) string { return FormatBytes(c.S3.MultipartThreshold) }, set: bytesSetter(func(c *Config) *int64 { return &c.S3.MultipartThreshold })},
		{Env: "DAB_PART_SIZE", Group: GroupS3, Flag: "part-size", Default: FormatBytes(storage.PartSizeDefault),
			Usage: "size of one part of a multipart upload (at least " + FormatBytes(storage.PartSizeMin) + ")",
			get:   func(c *Config) string { return FormatBytes(c.S3.PartSize) }, set: bytesSetter(func(c *Config) *int64 { return &c.S3.PartSize })},
		{Env: "DAB_PART_CONCURRENCY", Group: GroupS3, Flag: "part-concurrency", Default: strconv.Itoa(storage.PartConcurrencyDefault),
			Usage: "parts of one object uploaded at once",
			get:   func(c *Config) string { return strconv.Itoa(c.S3.PartConcurrency) }, set: intSetter(func(c *Config) *int { return &c.S3.PartConcurrency })},
		{Env: "DAB_LOG_FORMAT", Group: GroupLogs, Flag: "log-format", Default: "json",
			Usage: "json or text; dab dev logs text when its stderr is a terminal unless this is given",
			get:   func(c *Config) string { return c.LogFormat }, set: func(c *Config, v string) error { c.LogFormat = strings.ToLower(strings.TrimSpace(v)); return nil }},
		{Env: "DAB_LOG_LEVEL", Group: GroupLogs, Flag: "log-level", Default: "info",
			Usage: "debug, info, warn or error",
			get:   func(c *Config) string { return c.LogLevel }, set: func(c *Config, v string) error { c.LogLevel = strings.ToLower(strings.TrimSpace(v)); return nil }},
		{Env: "DAB_IMPORT_MAX_BYTES", Group: GroupImports, Flag: "import-max-bytes", Default: "5GiB",
			Usage: "largest file an import (dab:import task) fetches",
			get:   func(c *Config) string { return FormatBytes(c.ImportMaxBytes) }, set: bytesSetter(func(c *Config) *int64 { return &c.ImportMaxBytes })},
		{Env: "DAB_IMPORT_ALLOW_HTTP", Group: GroupImports, Flag: "import-allow-http", Default: "",
			Usage: "comma list of hosts imports may fetch over plain http:// (development; every other URL must be https://)",
			get:   func(c *Config) string { return strings.Join(c.ImportAllowHTTP, ",") }, set: listSetter(func(c *Config) *[]string { return &c.ImportAllowHTTP })},
		{Env: "DAB_IMPORT_ALLOW_PRIVATE", Group: GroupImports, Flag: "import-allow-private", Default: "",
			Usage: "comma list of hosts imports may fetch from although they resolve to loopback, private or link-local addresses (refused by default: no SSRF through dab)",
			get:   func(c *Config) string { return strings.Join(c.ImportAllowPrivate, ",") }, set: listSetter(func(c *Config) *[]string { return &c.ImportAllowPrivate })},
		{Env: "DAB_IMPORT_CA_FILE", Group: GroupImports, Flag: "import-ca-file", Default: "",
			Usage: "PEM file of extra CAs that sign https:// import sources (a private CA)",
			get:   func(c *Config) string { return c.ImportCAFile }, set: func(c *Config, v string) error { c.ImportCAFile = v; return nil }},
	}
}

// listSetter reads a comma-separated list, dropping blanks.
func listSetter(field func(*Config) *[]string) func(*Config, string) error {
	return func(c *Config, v string) error {
		var out []string
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
		*field(c) = out
		return nil
	}
}

// defaultConcurrency: an upload mostly waits (for the store, for Redis),
// so a worker runs many more of them than it has CPUs.
func defaultConcurrency() int { return max(32, 16*runtime.NumCPU()) }

// defaultHostID is the host name, reduced to what a queue name may hold.
func defaultHostID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' {
			return r
		}
		return '-'
	}, h)
}

var hostIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func intSetter(field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		*field(c) = n
		return nil
	}
}

func boolSetter(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*field(c) = b
		return nil
	}
}

func durationSetter(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 30s or 2m", v)
		}
		*field(c) = d
		return nil
	}
}

func bytesSetter(field func(*Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := ParseBytes(v)
		if err != nil {
			return err
		}
		*field(c) = n
		return nil
	}
}

// hostsSetter reads a comma-separated list of host names or IP addresses.
func hostsSetter(field func(*Config) *[]string) func(*Config, string) error {
	return func(c *Config, v string) error {
		var out []string
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h == "" {
				continue
			}
			if err := webhook.CheckHost(h); err != nil {
				return err
			}
			out = append(out, h)
		}
		*field(c) = out
		return nil
	}
}

func prefixesSetter(field func(*Config) *[]netip.Prefix) func(*Config, string) error {
	return func(c *Config, v string) error {
		p, err := ParsePrefixes(v)
		if err != nil {
			return err
		}
		*field(c) = p
		return nil
	}
}

// ParsePrefixes reads a comma-separated list of IP addresses and CIDRs
// ("10.0.0.0/8, 192.0.2.7, ::1"); a bare address is a prefix of one.
func ParsePrefixes(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not an IP address or CIDR (example: 10.0.0.0/8)", f)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR (example: 10.0.0.0/8)", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// FormatPrefixes is the inverse of ParsePrefixes.
func FormatPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Loader reads settings from the environment and from flags registered on a FlagSet.
type Loader struct {
	cfg    Config
	errs   []error
	getenv func(string) string
}

// NewLoader starts from the defaults and applies the environment (getenv is
// os.Getenv in production; tests pass their own).
func NewLoader(getenv func(string) string) *Loader {
	if getenv == nil {
		getenv = os.Getenv
	}
	l := &Loader{getenv: getenv, cfg: Config{Sources: map[string]string{}}}
	for _, s := range Settings() {
		if err := s.set(&l.cfg, s.Default); err != nil {
			panic(fmt.Sprintf("config: default of %s: %v", s.Env, err)) // a programming error
		}
		l.cfg.Sources[s.Env] = "default"
		v := getenv(s.Env)
		if v == "" && s.Env == "AWS_REGION" {
			v = getenv("AWS_DEFAULT_REGION")
		}
		if v == "" {
			continue
		}
		if err := s.set(&l.cfg, v); err != nil {
			l.errs = append(l.errs, fmt.Errorf("%s: %w", s.Env, err))
			continue
		}
		l.cfg.Sources[s.Env] = "env"
	}
	return l
}

// RegisterFlags adds one flag per setting to fs; a flag given on the command
// line wins over the environment.
func (l *Loader) RegisterFlags(fs *pflag.FlagSet) {
	for _, s := range Settings() {
		f := fs.VarPF(&flagValue{l: l, s: s}, s.Flag, "", fmt.Sprintf("%s (env %s)", s.Usage, s.Env))
		f.DefValue = s.Default // not the value from the environment: it may be a secret
		if s.IsBool() {
			f.NoOptDefVal = "true" // --poll alone means --poll=true
		}
	}
}

// IsBool reports whether the setting is true or false (its flag takes no value).
func (s Setting) IsBool() bool { return s.Default == "false" || s.Default == "true" }

// flagValue is a setting as a flag: setting it records "flag" as the source.
type flagValue struct {
	l *Loader
	s Setting
}

func (v *flagValue) String() string { return v.s.get(&v.l.cfg) }

func (v *flagValue) Set(val string) error {
	if err := v.s.set(&v.l.cfg, val); err != nil {
		return err
	}
	v.l.cfg.Sources[v.s.Env] = "flag"
	return nil
}

func (v *flagValue) Type() string {
	if v.s.IsBool() {
		return "bool"
	}
	return "string"
}

// Load returns the configuration after validation.
func (l *Loader) Load() (*Config, error) {
	cfg := l.cfg
	cfg.Sources = make(map[string]string, len(l.cfg.Sources))
	for k, v := range l.cfg.Sources {
		cfg.Sources[k] = v
	}
	if cfg.Poll && cfg.Sources["DAB_RESCAN_INTERVAL"] == "default" {
		cfg.RescanInterval = 2 * time.Second // polling is the only way to see files
	}
	errs := append([]error(nil), l.errs...)
	errs = append(errs, cfg.validate()...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("configuration: %w", errors.Join(errs...))
	}
	return &cfg, nil
}

// Explicit reports whether the setting of env was given by the environment or a flag.
func (c *Config) Explicit(env string) bool {
	s := c.Sources[env]
	return s == "env" || s == "flag"
}

var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// ValidateBucketName checks S3's bucket naming rules.
func ValidateBucketName(b string) error {
	if !bucketName.MatchString(b) || strings.Contains(b, "..") {
		return fmt.Errorf("%q is not a valid S3 bucket name: use 3-63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit", b)
	}
	return nil
}

func (c *Config) validate() []error {
	var errs []error
	bad := func(env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{env}, args...)...))
	}
	parse := map[string]func(string) error{
		"single":   func(u string) error { _, err := redis.ParseURL(u); return err },
		"sentinel": func(u string) error { _, err := redis.ParseFailoverURL(u); return err },
		"cluster":  func(u string) error { _, err := redis.ParseClusterURL(u); return err },
	}[c.RedisMode]
	if parse == nil {
		bad("DAB_REDIS_MODE", "%q: use single, sentinel or cluster", c.RedisMode)
	}
	// An empty DAB_REDIS_URL is refused where Redis is needed (a client
	// command through DAB_SERVER does not need it).
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			bad("DAB_REDIS_URL", "%q is not a redis:// or rediss:// URL (example: redis://127.0.0.1:6379/0)", RedactURL(c.RedisURL))
		} else if parse != nil {
			if err := parse(c.RedisURL); err != nil {
				bad("DAB_REDIS_URL", "%v", RedactText(err.Error(), c.RedisURL))
			}
		}
	}
	if c.RedisMinReplicas < 0 || c.RedisMinReplicas > ledger.MinReplicasMax {
		bad("DAB_REDIS_MIN_REPLICAS", "%d is out of range: use 0 (wait for no replica) to %d", c.RedisMinReplicas, ledger.MinReplicasMax)
	}
	if c.RedisReplicaTimeout < ledger.ReplicaTimeoutMin || c.RedisReplicaTimeout > ledger.ReplicaTimeoutMax {
		bad("DAB_REDIS_REPLICA_TIMEOUT", "%s is out of range: use %s to %s", c.RedisReplicaTimeout, ledger.ReplicaTimeoutMin, ledger.ReplicaTimeoutMax)
	}
	if c.KeyPrefix == "" || strings.ContainsAny(c.KeyPrefix, "{} \t\n") {
		bad("DAB_KEY_PREFIX", "%q must be non-empty and contain no spaces or braces (braces are Redis Cluster hash tags dab sets itself)", c.KeyPrefix)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		bad("DAB_DATA_DIR", "is empty: give a folder for the spool, such as ./dab-data")
	}
	if c.Concurrency < 1 || c.Concurrency > 10000 {
		bad("DAB_CONCURRENCY", "%d is out of range: use 1 to 10000", c.Concurrency)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("DAB_HTTP_ADDR", "%q is not host:port (example: 127.0.0.1:8080)", c.HTTPAddr)
	}
	if c.ImportMaxBytes < 1 {
		bad("DAB_IMPORT_MAX_BYTES", "%d: give a size such as 5GiB", c.ImportMaxBytes)
	}
	if c.MaxUploadBytes < 1 {
		bad("DAB_MAX_UPLOAD_BYTES", "must be at least 1 byte")
	}
	if c.MinUploadRate < 0 {
		bad("DAB_MIN_UPLOAD_RATE", "%d is negative: use 0 (no minimum) or a rate such as 1KiB", c.MinUploadRate)
	}
	if c.MinFreeBytes < 0 {
		bad("DAB_MIN_FREE_BYTES", "%d is negative: use 0 (no floor) or a size such as 256MiB", c.MinFreeBytes)
	}
	if c.TusExpiry < time.Minute {
		bad("DAB_TUS_EXPIRY", "%s is too short: use at least 1m (clients resume after network breaks)", c.TusExpiry)
	}
	if c.DownloadTTL < storage.URLTTLMin || c.DownloadTTL > storage.URLTTLMax {
		bad("DAB_DOWNLOAD_TTL", "%s is out of range: use %s to %s (S3 refuses presigned URLs that live longer than 7 days)", c.DownloadTTL, storage.URLTTLMin, storage.URLTTLMax)
	}
	if c.MaxConcurrentUploads < 1 || c.MaxConcurrentUploads > 10000 {
		bad("DAB_MAX_CONCURRENT_UPLOADS", "%d is out of range: use 1 to 10000", c.MaxConcurrentUploads)
	}
	if c.Server != "" {
		if u, err := url.Parse(c.Server); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("DAB_SERVER", "%q is not an http:// or https:// URL", RedactURL(c.Server))
		}
	}
	if c.HouseAccount == "" || c.HouseAccount == "issuance" || strings.ContainsAny(c.HouseAccount, " |\t\n") {
		bad("DAB_HOUSE_ACCOUNT", "%q: give an account ID (letters, digits, '.', '_', ':', '@', '-'), not issuance", c.HouseAccount)
	}
	if !hostIDPattern.MatchString(c.HostID) {
		bad("DAB_HOST_ID", "%q: use 1 to 63 letters, digits, '.', '_' or '-'", c.HostID)
	}
	if strings.TrimSpace(c.DropDir) == "" {
		bad("DAB_DROP_DIR", "is empty: give the drop folder, such as ./drop")
	}
	if c.Settle < 0 || c.Settle > time.Hour {
		bad("DAB_SETTLE", "%s is out of range: use 0s to 1h", c.Settle)
	}
	if c.RescanInterval < 100*time.Millisecond {
		bad("DAB_RESCAN_INTERVAL", "%s is too short: use at least 100ms", c.RescanInterval)
	}
	if c.JournalInterval < 100*time.Millisecond || c.JournalInterval > time.Hour {
		bad("DAB_JOURNAL_INTERVAL", "%s is out of range: use 100ms to 1h", c.JournalInterval)
	}
	if c.EventsMaxLen < event.MaxLenMin || c.EventsMaxLen > event.MaxLenMax {
		bad("DAB_EVENTS_MAXLEN", "%d is out of range: use %d to %d", c.EventsMaxLen, event.MaxLenMin, event.MaxLenMax)
	}
	if c.EventsMaxAge != 0 && c.EventsMaxAge < event.MaxAgeMin {
		bad("DAB_EVENTS_MAX_AGE", "%s is too short: use 0s (no age limit) or at least %s", c.EventsMaxAge, event.MaxAgeMin)
	}
	if c.ShutdownTimeout < time.Second {
		bad("DAB_SHUTDOWN_TIMEOUT", "%s is too short: use at least 1s", c.ShutdownTimeout)
	}
	if c.S3.Bucket != "" {
		if err := ValidateBucketName(c.S3.Bucket); err != nil {
			bad("AWS_S3_BUCKET", "%v", err)
		}
	}
	if c.S3.Endpoint != "" {
		if u, err := url.Parse(c.S3.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("AWS_ENDPOINT_URL_S3", "%q is not an http:// or https:// URL", RedactURL(c.S3.Endpoint))
		}
	}
	if (c.S3.AccessKeyID == "") != (c.S3.SecretAccessKey == "") {
		bad("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together (or neither, to use the AWS default credential chain)")
	}
	if c.S3.ChecksumMode != storage.ChecksumSHA256 && c.S3.ChecksumMode != storage.ChecksumOff {
		bad("DAB_S3_CHECKSUM", "%q is not one of sha256, off", c.S3.ChecksumMode)
	}
	if c.S3.PartSize < storage.PartSizeMin || c.S3.PartSize > storage.PartSizeMax {
		bad("DAB_PART_SIZE", "%s is out of range: S3 parts are %s to %s", FormatBytes(c.S3.PartSize), FormatBytes(storage.PartSizeMin), FormatBytes(storage.PartSizeMax))
	}
	if c.S3.MultipartThreshold < c.S3.PartSize {
		bad("DAB_MULTIPART_THRESHOLD", "%s is smaller than DAB_PART_SIZE %s: use at least the part size", FormatBytes(c.S3.MultipartThreshold), FormatBytes(c.S3.PartSize))
	}
	if c.S3.PartConcurrency < 1 || c.S3.PartConcurrency > 64 {
		bad("DAB_PART_CONCURRENCY", "%d is out of range: use 1 to 64", c.S3.PartConcurrency)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("DAB_LOG_FORMAT", "%q: use json or text", c.LogFormat)
	}
	if c.LogLevel != "debug" && c.LogLevel != "info" && c.LogLevel != "warn" && c.LogLevel != "error" {
		bad("DAB_LOG_LEVEL", "%q: use debug, info, warn or error", c.LogLevel)
	}
	return errs
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
			v = RedactURL(v)
		case s.Secret && v != "":
			v = Mask(v)
		}
		out = append(out, Line{Env: s.Env, Flag: "--" + s.Flag, Value: v, Source: c.Sources[s.Env]})
	}
	return out
}
