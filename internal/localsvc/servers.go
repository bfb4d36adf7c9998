package localsvc

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Redis is a redis-server child process.
type Redis struct {
	process
	Dir      string
	password string
}

// RedisOptions configure StartRedis.
type RedisOptions struct {
	// Dir holds the server's data (AOF) and log. Required.
	Dir string
	// Port to listen on (127.0.0.1); 0 picks a free one.
	Port int
	// AOF turns on the append-only file with fsync every second, so a
	// restart keeps the data.
	AOF bool
	// ReplicaOf, when set (host:port), starts the server as a replica of
	// that master (--replicaof). It answers PING before its first sync:
	// wait for master_link_status:up if a test needs the data there.
	ReplicaOf string
	// Password, when set, is required of every client (requirepass) and is
	// in URL. It goes to the server in a config file only its owner may
	// read, never on the command line, which every user can see.
	Password string
}

// StartRedis starts redis-server and waits until it answers PING.
func StartRedis(o RedisOptions) (*Redis, error) {
	bin, err := FindBinary("redis-server", RedisInstallHint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("localsvc: %w", err)
	}
	aof := "no"
	if o.AOF {
		aof = "yes"
	}
	var r *Redis
	err = onFreePort(o.Port, func(port int) error {
		r, err = newRedis(bin, port, aof, o)
		if err != nil {
			return err
		}
		return r.start()
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// newRedis is the redis-server of StartRedis on port, not started.
func newRedis(bin string, port int, aof string, o RedisOptions) (*Redis, error) {
	args := []string{
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", o.Dir,
		"--save", "", "--appendonly", aof, "--appendfsync", "everysec",
		"--protected-mode", "yes", "--daemonize", "no",
		// A replica's full sync starts at once, not after the default 5s
		// wait for more replicas to join it.
		"--repl-diskless-sync-delay", "0",
	}
	if o.Password != "" {
		if strings.Trim(o.Password, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
			return nil, errors.New("localsvc: a Redis password is letters and digits (it goes into a config file as it is)")
		}
		conf := filepath.Join(o.Dir, "auth.conf")
		if err := os.WriteFile(conf, []byte("requirepass \""+o.Password+"\"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("localsvc: %w", err)
		}
		args = append([]string{conf}, args...) // the config file comes first
	}
	if o.ReplicaOf != "" {
		host, port, err := net.SplitHostPort(o.ReplicaOf)
		if err != nil {
			return nil, fmt.Errorf("localsvc: replica of %q: %w", o.ReplicaOf, err)
		}
		args = append(args, "--replicaof", host, port)
	}
	return &Redis{Dir: o.Dir, password: o.Password, process: process{
		name: "redis-server", bin: bin, args: args, port: port,
		log: filepath.Join(o.Dir, "redis.log"), ready: redisReady,
	}}, nil
}

// Addr is host:port.
func (r *Redis) Addr() string { return r.addr() }

// URL is the redis:// URL of database 0, with the password if there is one.
func (r *Redis) URL() string { return redisURL(r.addr(), r.password) }

// redisURL is the redis:// URL of database 0 at addr, with password if set.
func redisURL(addr, password string) string {
	u := url.URL{Scheme: "redis", Host: addr, Path: "/0"}
	if password != "" {
		u.User = url.UserPassword("", password)
	}
	return u.String()
}

// S3 is a versitygw child process serving a folder as an S3-compatible store.
type S3 struct {
	process
	Dir       string
	AccessKey string
	SecretKey string
}

// S3Options configure StartS3.
type S3Options struct {
	// Dir holds the buckets (one folder each) and the log. Its filesystem
	// needs extended attributes (ext4, xfs, tmpfs).
	Dir string
	// Port to listen on (127.0.0.1); 0 picks a free one.
	Port                 int
	AccessKey, SecretKey string
}

// StartS3 starts versitygw with the posix backend.
func StartS3(o S3Options) (*S3, error) {
	bin, err := FindBinary("versitygw", VersitygwInstallHint)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(o.Dir, "buckets")
	if err := os.MkdirAll(data, 0o750); err != nil {
		return nil, fmt.Errorf("localsvc: %w", err)
	}
	var s *S3
	err = onFreePort(o.Port, func(port int) error {
		args := []string{
			// Keep-alive as S3 itself does: without it every request costs a
			// new connection, which no real deployment pays.
			"--port", "127.0.0.1:" + strconv.Itoa(port), "--quiet", "--keep-alive",
			"posix", data,
		}
		s = &S3{Dir: o.Dir, AccessKey: o.AccessKey, SecretKey: o.SecretKey, process: process{
			name: "versitygw", bin: bin, args: args, port: port,
			log: filepath.Join(o.Dir, "versitygw.log"), ready: dialReady,
			// Keys go through the environment, not the command line that every
			// user of the machine can read in the process list.
			env: []string{"ROOT_ACCESS_KEY_ID=" + o.AccessKey, "ROOT_SECRET_ACCESS_KEY=" + o.SecretKey},
		}}
		return s.start()
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Endpoint is the store's http:// URL.
func (s *S3) Endpoint() string { return "http://" + s.addr() }

// Sentinel is a Redis Sentinel (redis-server --sentinel) child process.
type Sentinel struct {
	process
	Dir string
}

// SentinelOptions configure StartSentinel.
type SentinelOptions struct {
	// Dir holds the sentinel's configuration file (Sentinel rewrites it
	// as it learns) and log. Required.
	Dir string
	// Port to listen on (127.0.0.1); 0 picks a free one.
	Port int
	// MasterName is the name clients ask the sentinels for.
	MasterName string
	// MasterAddr is the master's host:port when the sentinel starts.
	MasterAddr string
	// Quorum is how many sentinels must agree that the master is down.
	Quorum int
	// DownAfter is how long the master may not answer before this
	// sentinel counts it down.
	DownAfter time.Duration
	// FailoverTimeout bounds one failover attempt (and the wait before a
	// failed one is tried again).
	FailoverTimeout time.Duration
}

// StartSentinel starts a sentinel that watches one master and waits until
// it answers PING.
func StartSentinel(o SentinelOptions) (*Sentinel, error) {
	bin, err := FindBinary("redis-server", RedisInstallHint)
	if err != nil {
		return nil, err
	}
	if o.MasterName == "" || o.MasterAddr == "" || o.Quorum < 1 || o.DownAfter <= 0 || o.FailoverTimeout <= 0 {
		return nil, fmt.Errorf("localsvc: a sentinel needs MasterName, MasterAddr, Quorum, DownAfter and FailoverTimeout")
	}
	host, masterPort, err := net.SplitHostPort(o.MasterAddr)
	if err != nil {
		return nil, fmt.Errorf("localsvc: sentinel master %q: %w", o.MasterAddr, err)
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("localsvc: %w", err)
	}
	var s *Sentinel
	err = onFreePort(o.Port, func(port int) error {
		conf := fmt.Sprintf(`bind 127.0.0.1
port %d
dir %s
sentinel monitor %s %s %s %d
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s %d
sentinel parallel-syncs %s 1
`, port, o.Dir, o.MasterName, host, masterPort, o.Quorum,
			o.MasterName, o.DownAfter.Milliseconds(), o.MasterName, o.FailoverTimeout.Milliseconds(), o.MasterName)
		path := filepath.Join(o.Dir, "sentinel.conf")
		if err := os.WriteFile(path, []byte(conf), 0o640); err != nil {
			return fmt.Errorf("localsvc: %w", err)
		}
		s = &Sentinel{Dir: o.Dir, process: process{
			name: "redis-sentinel", bin: bin, args: []string{path, "--sentinel"}, port: port,
			log: filepath.Join(o.Dir, "sentinel.log"), ready: redisReady,
		}}
		return s.start()
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Addr is host:port.
func (s *Sentinel) Addr() string { return s.addr() }
