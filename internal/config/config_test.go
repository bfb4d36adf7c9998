package config

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/storage"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := NewLoader(envOf(nil)).Load()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RedisURL != "" || cfg.LogFormat != "json" || cfg.LogLevel != "info" || cfg.KeyPrefix != "dab:" || cfg.DataDir != "./dab-data" ||
		cfg.S3.ChecksumMode != storage.ChecksumSHA256 || cfg.S3.MultipartThreshold != storage.MultipartThresholdDefault ||
		cfg.S3.PartSize != storage.PartSizeDefault || cfg.S3.PartConcurrency != storage.PartConcurrencyDefault {
		t.Fatalf("defaults = %+v", cfg)
	}
	if err := cfg.RequireS3(); err == nil || !strings.Contains(err.Error(), "AWS_S3_BUCKET") {
		t.Fatalf("RequireS3 = %v", err)
	}
	if tr := cfg.EventTrim(); tr.MaxLen != event.MaxLenDefault || tr.MaxAge != 0 || cfg.WebhooksFile != "" {
		t.Fatalf("events and webhooks defaults = %+v %q", tr, cfg.WebhooksFile)
	}
	cfg, err = NewLoader(envOf(map[string]string{"DAB_WEBHOOKS_ALLOW_HTTP": " localhost, 127.0.0.1 ,", "DAB_WEBHOOKS_ALLOW_PRIVATE": "[::1]",
		"DAB_EVENTS_MAX_AGE": "720h"})).Load()
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.WebhookOptions(); strings.Join(o.AllowHTTP, " ") != "localhost 127.0.0.1" || strings.Join(o.AllowPrivate, " ") != "[::1]" || cfg.EventTrim().MaxAge != 720*time.Hour {
		t.Fatalf("webhook options %+v, trim %+v", o, cfg.EventTrim())
	}
}

func TestEnvThenFlags(t *testing.T) {
	t.Parallel()
	l := NewLoader(envOf(map[string]string{
		"AWS_S3_BUCKET": "assets-env", "AWS_DEFAULT_REGION": "eu-west-1", "DAB_CONCURRENCY": "7",
		"DAB_PART_SIZE": "10MiB", "DAB_S3_PATH_STYLE": "true",
	}))
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	l.RegisterFlags(fs)
	if err := fs.Parse([]string{"--bucket", "assets-flag"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.S3.Bucket != "assets-flag" || cfg.Sources["AWS_S3_BUCKET"] != "flag" {
		t.Fatalf("flag did not win: %q from %s", cfg.S3.Bucket, cfg.Sources["AWS_S3_BUCKET"])
	}
	if cfg.S3.Region != "eu-west-1" || cfg.Concurrency != 7 || cfg.S3.PartSize != 10<<20 || !cfg.S3.PathStyle {
		t.Fatalf("env not applied: %+v", cfg)
	}
	if !cfg.Explicit("AWS_S3_BUCKET") || cfg.Explicit("DAB_REDIS_URL") {
		t.Fatal("Explicit is wrong")
	}
}

func TestValidationNamesTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"DAB_REDIS_URL": "http://x"}, "DAB_REDIS_URL"},
		{map[string]string{"DAB_REDIS_URL": "redis://u:hunter2@h:notaport/0"}, "DAB_REDIS_URL"},
		{map[string]string{"DAB_CONCURRENCY": "lots"}, `DAB_CONCURRENCY: "lots" is not a whole number`},
		{map[string]string{"DAB_CONCURRENCY": "0"}, "DAB_CONCURRENCY: 0 is out of range"},
		{map[string]string{"AWS_S3_BUCKET": "Bad_Bucket"}, "AWS_S3_BUCKET"},
		{map[string]string{"AWS_S3_BUCKET": "ab"}, "AWS_S3_BUCKET"},
		{map[string]string{"AWS_ENDPOINT_URL_S3": "localhost:9000"}, "AWS_ENDPOINT_URL_S3"},
		{map[string]string{"AWS_ACCESS_KEY_ID": "AKIA"}, "must be set together"},
		{map[string]string{"DAB_S3_CHECKSUM": "crc32"}, "DAB_S3_CHECKSUM"},
		{map[string]string{"DAB_PART_SIZE": "1MiB"}, "DAB_PART_SIZE"},
		{map[string]string{"DAB_MULTIPART_THRESHOLD": "6MiB"}, "smaller than DAB_PART_SIZE"},
		{map[string]string{"DAB_KEY_PREFIX": "{x}"}, "DAB_KEY_PREFIX"},
		{map[string]string{"DAB_S3_PATH_STYLE": "yes please"}, "DAB_S3_PATH_STYLE"},
		{map[string]string{"DAB_HOST_ID": "host/../x"}, "DAB_HOST_ID"},
		{map[string]string{"DAB_REDIS_MODE": "ring"}, "DAB_REDIS_MODE"},
		{map[string]string{"DAB_EVENTS_MAXLEN": "10"}, "DAB_EVENTS_MAXLEN: 10 is out of range: use 1000 to 1000000000"},
		{map[string]string{"DAB_EVENTS_MAX_AGE": "10s"}, "DAB_EVENTS_MAX_AGE: 10s is too short"},
		{map[string]string{"DAB_WEBHOOKS_ALLOW_HTTP": "http://localhost:8080"}, "DAB_WEBHOOKS_ALLOW_HTTP: \"http://localhost:8080\" is not a host name"},
		{map[string]string{"DAB_WEBHOOKS_ALLOW_PRIVATE": "a b"}, "DAB_WEBHOOKS_ALLOW_PRIVATE"},
		{map[string]string{"DAB_IMPORT_ALLOW_HTTP": "http://cdn.example.org/"}, "DAB_IMPORT_ALLOW_HTTP: \"http://cdn.example.org/\" is not a host name"},
		{map[string]string{"DAB_IMPORT_ALLOW_PRIVATE": "10.0.0.0/8"}, "DAB_IMPORT_ALLOW_PRIVATE"},
		{map[string]string{"DAB_IMPORT_S3_BUCKETS": "partner,s3://other"}, "DAB_IMPORT_S3_BUCKETS: \"s3://other\" is not a valid S3 bucket name"},
		{map[string]string{"AWS_S3_BUCKET": "dab-assets", "DAB_IMPORT_S3_BUCKETS": "partner,dab-assets"}, "DAB_IMPORT_S3_BUCKETS: dab-assets is dab's own bucket"},
		{map[string]string{"DAB_REDIS_MODE": "sentinel", "DAB_REDIS_URL": "redis://h:1?bogus=1"}, "DAB_REDIS_URL"},
		{map[string]string{"DAB_HOUSE_ACCOUNT": "issuance"}, "DAB_HOUSE_ACCOUNT"},
		{map[string]string{"DAB_HTTP_ADDR": "8080"}, "DAB_HTTP_ADDR"},
		{map[string]string{"DAB_MAX_UPLOAD_BYTES": "0"}, "DAB_MAX_UPLOAD_BYTES"},
		{map[string]string{"DAB_MAX_CONCURRENT_UPLOADS": "0"}, "DAB_MAX_CONCURRENT_UPLOADS"},
		{map[string]string{"DAB_SERVER": "ftp://x"}, "DAB_SERVER"},
		{map[string]string{"DAB_SETTLE": "2h"}, "DAB_SETTLE"},
		{map[string]string{"DAB_RESCAN_INTERVAL": "1ms"}, "DAB_RESCAN_INTERVAL"},
		{map[string]string{"DAB_DROP_DIR": " "}, "DAB_DROP_DIR"},
		{map[string]string{"DAB_DOWNLOAD_TTL": "soon"}, "DAB_DOWNLOAD_TTL"},
		{map[string]string{"DAB_DOWNLOAD_TTL": "999ms"}, "DAB_DOWNLOAD_TTL: 999ms is out of range"},
		{map[string]string{"DAB_DOWNLOAD_TTL": "168h0m1s"}, "DAB_DOWNLOAD_TTL: 168h0m1s is out of range"},
	}
	for _, tt := range tests {
		_, err := NewLoader(envOf(tt.env)).Load()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("env %v: err = %v, want it to mention %q", tt.env, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}

func TestEffectiveMasksSecrets(t *testing.T) {
	t.Parallel()
	cfg, err := NewLoader(envOf(map[string]string{
		"DAB_REDIS_URL": "redis://dab:s3cret-pass@redis.internal:6379/2", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
		"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG", "AWS_SESSION_TOKEN": "tok-en",
	})).Load()
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, l := range cfg.Effective() {
		all.WriteString(l.Env + "=" + l.Value + "\n")
	}
	out := all.String()
	for _, secret := range []string{"s3cret-pass", "wJalrXUtnFEMI", "tok-en"} {
		if strings.Contains(out, secret) {
			t.Fatalf("secret %q printed:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "redis.internal:6379") || !strings.Contains(out, "AKIAEXAMPLE") {
		t.Fatalf("non-secret parts missing:\n%s", out)
	}
}

func TestParseBytes(t *testing.T) {
	t.Parallel()
	tests := map[string]int64{"16MiB": 16 << 20, "5GB": 5e9, "1048576": 1 << 20, "8 mib": 8 << 20, "0": 0}
	for in, want := range tests {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "1.5GiB", "99999999999TiB"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) accepted", bad)
		}
	}
	if FormatBytes(16<<20) != "16MiB" || FormatBytes(1000) != "1000B" {
		t.Fatal("FormatBytes")
	}
}

func FuzzParseBytes(f *testing.F) {
	f.Add("16MiB")
	f.Add("1e9")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBytes(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseBytes(%q) = %d", s, n)
		}
	})
}

// TestDownloadTTL: the default and both ends of the range S3 accepts.
func TestDownloadTTL(t *testing.T) {
	t.Parallel()
	cfg, err := NewLoader(envOf(nil)).Load()
	if err != nil || cfg.DownloadTTL != storage.URLTTLDefault {
		t.Fatalf("default DownloadTTL = %v, %v; want %s", cfg, err, storage.URLTTLDefault)
	}
	for _, v := range []string{storage.URLTTLMin.String(), storage.URLTTLMax.String()} {
		cfg, err := NewLoader(envOf(map[string]string{"DAB_DOWNLOAD_TTL": v})).Load()
		if err != nil || cfg.DownloadTTL.String() != v {
			t.Errorf("DAB_DOWNLOAD_TTL=%s: %v", v, err)
		}
	}
	l := NewLoader(envOf(map[string]string{"DAB_DOWNLOAD_TTL": "1h"}))
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	l.RegisterFlags(fs)
	if err := fs.Parse([]string{"--download-ttl", "90s"}); err != nil {
		t.Fatal(err)
	}
	if cfg, err := l.Load(); err != nil || cfg.DownloadTTL != 90*time.Second || cfg.Sources["DAB_DOWNLOAD_TTL"] != "flag" {
		t.Fatalf("--download-ttl 90s: %v", err)
	}
}

func TestRedisMinReplicas(t *testing.T) {
	t.Parallel()
	cfg, err := NewLoader(envOf(nil)).Load()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RedisMinReplicas != 0 || cfg.RedisReplicaTimeout != ledger.ReplicaTimeoutDefault {
		t.Fatalf("defaults: min replicas %d, timeout %s", cfg.RedisMinReplicas, cfg.RedisReplicaTimeout)
	}
	l := NewLoader(envOf(map[string]string{"DAB_REDIS_MIN_REPLICAS": "1", "DAB_REDIS_REPLICA_TIMEOUT": "250ms"}))
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	l.RegisterFlags(fs)
	if err := fs.Parse([]string{"--redis-min-replicas", "2"}); err != nil {
		t.Fatal(err)
	}
	if cfg, err = l.Load(); err != nil {
		t.Fatal(err)
	}
	if cfg.RedisMinReplicas != 2 || cfg.RedisReplicaTimeout != 250*time.Millisecond {
		t.Fatalf("min replicas %d (want the flag's 2), timeout %s (want 250ms)", cfg.RedisMinReplicas, cfg.RedisReplicaTimeout)
	}
	for want, env := range map[string]map[string]string{
		`DAB_REDIS_MIN_REPLICAS: "one" is not a whole number`: {"DAB_REDIS_MIN_REPLICAS": "one"},
		"DAB_REDIS_MIN_REPLICAS: -1 is out of range":          {"DAB_REDIS_MIN_REPLICAS": "-1"},
		"DAB_REDIS_MIN_REPLICAS: 17 is out of range":          {"DAB_REDIS_MIN_REPLICAS": strconv.Itoa(ledger.MinReplicasMax + 1)},
		"DAB_REDIS_REPLICA_TIMEOUT: 0s is out of range":       {"DAB_REDIS_REPLICA_TIMEOUT": "0s"},
		"DAB_REDIS_REPLICA_TIMEOUT: 2m0s is out of range":     {"DAB_REDIS_REPLICA_TIMEOUT": "2m"},
		`DAB_REDIS_REPLICA_TIMEOUT: "1" is not a duration`:    {"DAB_REDIS_REPLICA_TIMEOUT": "1"},
	} {
		_, err := NewLoader(envOf(env)).Load()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("env %v: err = %v, want it to mention %q", env, err, want)
		}
	}
}

// TestFlags: every setting is a flag; a true-or-false one takes no value;
// a flag's source is "flag"; no flag's default shows a value from the
// environment (it may be a secret).
func TestFlags(t *testing.T) {
	t.Parallel()
	l := NewLoader(envOf(map[string]string{"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "env-secret-value"}))
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	l.RegisterFlags(fs)
	if err := fs.Parse([]string{"--poll", "--log-format", "TEXT", "--spool-shared=false", "arg"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Poll || cfg.LogFormat != "text" || cfg.SpoolShared || fs.Arg(0) != "arg" {
		t.Fatalf("poll %v, log format %q, spool shared %v, args %v", cfg.Poll, cfg.LogFormat, cfg.SpoolShared, fs.Args())
	}
	for _, env := range []string{"DAB_POLL", "DAB_LOG_FORMAT", "DAB_SPOOL_SHARED"} {
		if cfg.Sources[env] != "flag" {
			t.Errorf("%s came from %s, want flag", env, cfg.Sources[env])
		}
	}
	groups := map[string]bool{GroupRedis: true, GroupWorker: true, GroupDrop: true, GroupHTTP: true, GroupClient: true, GroupS3: true, GroupLogs: true, GroupImports: true, GroupEvents: true}
	for _, s := range Settings() {
		f := fs.Lookup(s.Flag)
		if f == nil {
			t.Errorf("%s has no flag --%s", s.Env, s.Flag)
			continue
		}
		if f.DefValue != s.Default {
			t.Errorf("--%s shows the default %q, want %q", s.Flag, f.DefValue, s.Default)
		}
		if !groups[s.Group] {
			t.Errorf("%s is in no known group (%q)", s.Env, s.Group)
		}
	}
	if err := fs.Parse([]string{"--concurrency", "many"}); err == nil || !strings.Contains(err.Error(), `"many" is not a whole number`) {
		t.Errorf("--concurrency many: %v", err)
	}
}
