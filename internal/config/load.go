// Loading: defaults, then the environment, then flags; the provenance of
// each value; and the checks of the whole configuration.

package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/redact"
	"github.com/dab-assets/dab/internal/storage"
)

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
			bad("DAB_REDIS_URL", "%q is not a redis:// or rediss:// URL (example: redis://127.0.0.1:6379/0)", redact.URL(c.RedisURL))
		} else if parse != nil {
			if err := parse(c.RedisURL); err != nil {
				bad("DAB_REDIS_URL", "%v", redact.Text(err.Error(), c.RedisURL))
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
	if c.Fetchers < 1 || c.Fetchers > 64 {
		bad("DAB_FETCHERS", "%d is out of range: use 1 to 64", c.Fetchers)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("DAB_HTTP_ADDR", "%q is not host:port (example: 127.0.0.1:8080)", c.HTTPAddr)
	}
	for _, b := range c.ImportS3Buckets {
		if b == c.S3.Bucket && b != "" {
			bad("DAB_IMPORT_S3_BUCKETS", "%s is dab's own bucket (DAB_S3_BUCKET), which imports never read: remove it", b)
		}
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
			bad("DAB_SERVER", "%q is not an http:// or https:// URL", redact.URL(c.Server))
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
		if err := naming.ValidateBucket(c.S3.Bucket); err != nil {
			bad("AWS_S3_BUCKET", "%v", err)
		}
	}
	if c.S3.Endpoint != "" {
		if u, err := url.Parse(c.S3.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("AWS_ENDPOINT_URL_S3", "%q is not an http:// or https:// URL", redact.URL(c.S3.Endpoint))
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
