// The table of every setting: its environment variable, flag, default,
// group and meaning, and how it is read and shown.

package config

import (
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/storage"
)

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
			Usage: "tasks of each queue (purchases, uploads, imports, webhooks) one worker runs at once",
			get:   func(c *Config) string { return strconv.Itoa(c.Concurrency) }, set: intSetter(func(c *Config) *int { return &c.Concurrency })},
		{Env: "DAB_FETCHERS", Group: GroupWorker, Flag: "fetchers", Default: "4",
			Usage: "asynq servers one worker runs side by side for each queue, sharing its DAB_CONCURRENCY: each fetches one task at a time, so more fetch faster",
			get:   func(c *Config) string { return strconv.Itoa(c.Fetchers) }, set: intSetter(func(c *Config) *int { return &c.Fetchers })},
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
		{Env: "DAB_TUS_EXPIRY", Group: GroupHTTP, Flag: "tus-expiry", Default: "24h0m0s", // intake.TusExpiryDefault (cmd/dab/defaults_test.go)
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
		{Env: "DAB_DOWNLOAD_TTL", Group: GroupHTTP, Flag: "download-ttl", Default: storage.URLTTLDefault.String(),
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
			get:   func(c *Config) string { return strings.Join(c.ImportAllowHTTP, ",") }, set: hostsSetter(func(c *Config) *[]string { return &c.ImportAllowHTTP })},
		{Env: "DAB_IMPORT_ALLOW_PRIVATE", Group: GroupImports, Flag: "import-allow-private", Default: "",
			Usage: "comma list of hosts imports may fetch from although they resolve to loopback, private or link-local addresses (refused by default: no SSRF through dab)",
			get:   func(c *Config) string { return strings.Join(c.ImportAllowPrivate, ",") }, set: hostsSetter(func(c *Config) *[]string { return &c.ImportAllowPrivate })},
		{Env: "DAB_IMPORT_CA_FILE", Group: GroupImports, Flag: "import-ca-file", Default: "",
			Usage: "PEM file of extra CAs that sign https:// import sources (a private CA)",
			get:   func(c *Config) string { return c.ImportCAFile }, set: func(c *Config, v string) error { c.ImportCAFile = v; return nil }},
		{Env: "DAB_IMPORT_S3_BUCKETS", Group: GroupImports, Flag: "import-s3-buckets", Default: "",
			Usage: "comma list of buckets s3:// imports may read with dab's credentials, or * for any (never dab's own bucket); none by default",
			get:   func(c *Config) string { return strings.Join(c.ImportS3Buckets, ",") }, set: bucketsSetter(func(c *Config) *[]string { return &c.ImportS3Buckets })},
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
