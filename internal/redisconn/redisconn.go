// Package redisconn opens dab's Redis: one server, a Sentinel-managed
// master, or a Cluster, with TLS (rediss://) and auth from the URL, for
// dab's own keys and (as a connection option) for asynq's monitor.
package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/dab-assets/dab/internal/redact"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Modes.
const (
	Single   = "single"
	Sentinel = "sentinel"
	Cluster  = "cluster"
)

// Options say how to reach Redis.
type Options struct {
	// URL: redis:// or rediss://, user:password@ allowed. Sentinel: the
	// address of a sentinel (more with ?addr=host:port), the master in
	// ?master_name=, the master's password in ?password=; the URL's userinfo
	// is the sentinels' own. Cluster: any node (more with ?addr=).
	URL string
	// Mode is Single (default), Sentinel or Cluster.
	Mode string
	// CAFile, when set, is a PEM file of the CAs that sign the server's
	// certificate (for rediss:// with a private CA).
	CAFile string
	// NoRetries makes a client that never sends a command again and
	// follows no Cluster redirection (MaxRetries and MaxRedirects -1): the
	// one a redisbatch.Client sends its batches on, which decides itself
	// what goes again.
	NoRetries bool
}

// Open returns a client for dab's keys and the equivalent asynq connection
// option (for the monitor, which opens its own). Its errors never quote a
// secret of the URL (go-redis quotes the whole URL when it does not parse).
func Open(o Options) (redis.UniversalClient, asynq.RedisConnOpt, error) {
	var roots *x509.CertPool
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("DAB_REDIS_CA_FILE: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("DAB_REDIS_CA_FILE %s holds no PEM certificate", o.CAFile)
		}
	}
	withCA := func(t *tls.Config) *tls.Config {
		if t != nil && roots != nil {
			t.RootCAs = roots
		}
		return t
	}
	switch strings.ToLower(o.Mode) {
	case "", Single:
		opt, err := redis.ParseURL(o.URL)
		if err != nil {
			return nil, nil, fmt.Errorf("DAB_REDIS_URL: %w", redact.Error(err, o.URL))
		}
		opt.TLSConfig = withCA(opt.TLSConfig)
		opt.PoolSize = poolSize(opt.PoolSize)
		if o.NoRetries {
			opt.MaxRetries = -1
		}
		return redis.NewClient(opt), asynq.RedisClientOpt{Addr: opt.Addr, Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig}, nil
	case Sentinel:
		opt, err := redis.ParseFailoverURL(o.URL)
		if err != nil {
			return nil, nil, fmt.Errorf("DAB_REDIS_URL (sentinel): %w", redact.Error(err, o.URL))
		}
		if opt.MasterName == "" {
			return nil, nil, fmt.Errorf("DAB_REDIS_URL (sentinel): name the master with ?master_name=")
		}
		opt.TLSConfig = withCA(opt.TLSConfig)
		opt.PoolSize = poolSize(opt.PoolSize)
		if o.NoRetries {
			opt.MaxRetries = -1
		}
		return redis.NewFailoverClient(opt), asynq.RedisFailoverClientOpt{MasterName: opt.MasterName, SentinelAddrs: opt.SentinelAddrs,
			SentinelPassword: opt.SentinelPassword, Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig}, nil
	case Cluster:
		opt, err := redis.ParseClusterURL(o.URL)
		if err != nil {
			return nil, nil, fmt.Errorf("DAB_REDIS_URL (cluster): %w", redact.Error(err, o.URL))
		}
		opt.TLSConfig = withCA(opt.TLSConfig)
		opt.PoolSize = poolSize(opt.PoolSize)
		if o.NoRetries {
			opt.MaxRetries, opt.MaxRedirects = -1, -1
		}
		return redis.NewClusterClient(opt), asynq.RedisClusterClientOpt{Addrs: opt.Addrs, Username: opt.Username, Password: opt.Password, TLSConfig: opt.TLSConfig}, nil
	default:
		return nil, nil, fmt.Errorf("DAB_REDIS_MODE %q: use single, sentinel or cluster", o.Mode)
	}
}

// PoolSizeMin is the fewest connections dab keeps per Redis server when
// the URL sets no pool_size: go-redis's default (10 per CPU) is below what
// a worker running DAB_CONCURRENCY uploads at once, each a few Redis calls,
// needs on a small machine.
const PoolSizeMin = 64

func poolSize(fromURL int) int {
	if fromURL > 0 {
		return fromURL
	}
	return max(PoolSizeMin, 10*runtime.GOMAXPROCS(0))
}
