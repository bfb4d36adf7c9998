package redisconn

import (
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

func TestOpenModes(t *testing.T) {
	t.Parallel()
	c, opt, err := Open(Options{URL: "rediss://u:p@10.0.0.1:6380/2"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if o, ok := opt.(asynq.RedisClientOpt); !ok || o.Addr != "10.0.0.1:6380" || o.Password != "p" || o.DB != 2 || o.TLSConfig == nil {
		t.Fatalf("single: %#v", opt)
	}
	c, opt, err = Open(Options{URL: "redis://sent:spw@10.0.0.1:26379?master_name=main&addr=10.0.0.2:26379&password=mpw", Mode: Sentinel})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if o, ok := opt.(asynq.RedisFailoverClientOpt); !ok || o.MasterName != "main" || len(o.SentinelAddrs) != 2 || o.SentinelPassword != "spw" || o.Password != "mpw" {
		t.Fatalf("sentinel: %#v", opt)
	}
	c, opt, err = Open(Options{URL: "rediss://u:p@10.0.0.1:7000?addr=10.0.0.2:7000", Mode: Cluster})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if o, ok := opt.(asynq.RedisClusterClientOpt); !ok || len(o.Addrs) != 2 || o.TLSConfig == nil {
		t.Fatalf("cluster: %#v", opt)
	}
	for _, bad := range []Options{
		{URL: "redis://h:1", Mode: "ring"},
		{URL: "redis://h:1", Mode: Sentinel},
		{URL: "redis://h:1", CAFile: "/nonexistent"},
	} {
		if _, _, err := Open(bad); err == nil || !strings.Contains(err.Error(), "DAB_REDIS") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

// TestOpenErrorsHideSecrets: a URL go-redis refuses is never quoted with its
// passwords, whatever the mode.
func TestOpenErrorsHideSecrets(t *testing.T) {
	t.Parallel()
	tests := []Options{
		{URL: "redis://:pa ss-open@h:1/0"},
		{URL: "redis://u:open-pw@h:notaport/0"},
		{URL: "redis://u:open-pw@h:1/0?password=open-master&bogus=1"},
		{URL: "redis://:open-pw@h:1?master_name=m&password=open-master&bogus=x", Mode: Sentinel},
		{URL: "redis://:open pw@h:1?master_name=m", Mode: Sentinel},
		{URL: "rediss://u:open-pw@h:1?addr=h2:1&password=open-master&bogus=1", Mode: Cluster},
		{URL: "rediss://u:open pw@h:1?addr=h2:1", Mode: Cluster},
	}
	for _, o := range tests {
		_, _, err := Open(o)
		if err == nil {
			t.Errorf("%s %q: no error", o.Mode, o.URL)
			continue
		}
		if !strings.Contains(err.Error(), "DAB_REDIS_URL") || strings.Contains(err.Error(), "open-") || strings.Contains(err.Error(), "open pw") || strings.Contains(err.Error(), "ss-open") {
			t.Errorf("%s %q: %v", o.Mode, o.URL, err)
		}
	}
}

// TestPoolSize: without pool_size in the URL a client keeps at least
// PoolSizeMin connections, in every mode; the URL's pool_size wins.
func TestPoolSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url, mode string
		want      int
	}{
		{"redis://10.0.0.1:6379/0", Single, poolSize(0)},
		{"redis://10.0.0.1:6379/0?pool_size=7", Single, 7},
		{"redis://10.0.0.1:26379?master_name=m", Sentinel, poolSize(0)},
		{"redis://10.0.0.1:7000?addr=10.0.0.2:7000", Cluster, poolSize(0)},
	} {
		c, _, err := Open(Options{URL: tc.url, Mode: tc.mode})
		if err != nil {
			t.Fatal(err)
		}
		var got int
		switch cc := c.(type) {
		case *redis.Client:
			got = cc.Options().PoolSize
		case *redis.ClusterClient:
			got = cc.Options().PoolSize
		}
		c.Close()
		if got != tc.want || got < 7 {
			t.Errorf("%s (%s): pool size %d, want %d", tc.url, tc.mode, got, tc.want)
		}
	}
	if poolSize(0) < PoolSizeMin {
		t.Errorf("default pool size %d < %d", poolSize(0), PoolSizeMin)
	}
}

// TestNoRetries: the client redisbatch sends its batches on never sends a
// command again, in every mode (go-redis keeps -1 retries as 0; a Cluster
// client retries by its redirections, and its nodes never).
func TestNoRetries(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{
		{URL: "redis://10.0.0.1:6379"},
		{URL: "redis://10.0.0.1:26379?master_name=main", Mode: Sentinel},
		{URL: "redis://10.0.0.1:7000", Mode: Cluster},
	} {
		for _, noRetries := range []bool{false, true} {
			o.NoRetries = noRetries
			c, _, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			retries, redirects := 0, -1
			switch c := c.(type) {
			case *redis.Client:
				retries = c.Options().MaxRetries
			case *redis.ClusterClient:
				retries, redirects = c.Options().MaxRetries, c.Options().MaxRedirects
			}
			c.Close()
			if sends := retries > 0 || redirects > 0; sends == noRetries {
				t.Errorf("%s with NoRetries %v: %d retries, %d redirects", o.URL, noRetries, retries, redirects)
			}
		}
	}
}
