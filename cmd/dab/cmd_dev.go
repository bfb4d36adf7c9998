package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/spf13/cobra"

	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/internal/redact"
	"github.com/dab-assets/dab/internal/storage"
)

// devBucket is the bucket `dab dev` creates in its local store.
const devBucket = "dab-dev"

func (c *cli) devCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dev",
		Short: "run everything on this machine with a local Redis and S3-compatible store",
		Long: `Run the whole pipeline on this machine until SIGINT or SIGTERM: the watcher
of the drop folder (./drop: drop files into drop/<type>/), the HTTP API with
console and monitor (http://127.0.0.1:8080/ unless --http-addr), and a
worker. Without configuration it starts redis-server (append-only file on)
and versitygw as child processes with their data under DAB_DATA_DIR/dev
(./dab-data/dev; or in-process stand-ins when they are missing, with a
warning); a Redis URL or bucket given explicitly is used instead. It
prints the admin token, and keeps it (with its ports) for the next start in
DAB_DATA_DIR/dev/dev.json. Client commands run from the same folder, or
with the same DAB_DATA_DIR (dab dev prints the export line), find it without
configuration. Logs are text when stderr is a terminal, JSON otherwise,
unless DAB_LOG_FORMAT is given.`,
		Example: `  dab dev
  dab dev --http-addr 127.0.0.1:9090 --data-dir /tmp/dab-try`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := c.app(args, roleDev)
			if err != nil {
				return err
			}
			return a.runDev(cmd.Context())
		},
	}
}

// runDev runs the whole pipeline on this machine. Without configuration it
// starts redis-server (AOF on) and versitygw as child processes with their
// data under DAB_DATA_DIR/dev, or in-process stand-ins when those binaries are
// missing. A Redis URL or bucket given explicitly is used instead.
func (a *app) runDev(ctx context.Context) error {
	dataDir, err := filepath.Abs(a.cfg.DataDir)
	if err != nil {
		return err
	}
	a.cfg.DataDir = dataDir
	// One dab dev per data folder, for as long as it runs: two started at
	// once would both find no state running and share one Redis folder and
	// one bucket. The lock goes with the process.
	unlock, err := config.LockDevDir(dataDir)
	if errors.Is(err, config.ErrDevRunning) {
		who := "another dab dev"
		if st, _ := config.ReadDevState(dataDir); st != nil && st.PID > 0 {
			who = fmt.Sprintf("another dab dev (pid %d, by its state file)", st.PID)
		}
		return fmt.Errorf("%s runs with the data folder %s: stop it, or use another DAB_DATA_DIR", who, dataDir)
	}
	if err != nil {
		return err
	}
	defer unlock()
	prev, err := config.ReadDevState(dataDir)
	if err != nil {
		return err
	}
	if prev == nil {
		prev = &config.DevState{}
	}
	state := &config.DevState{PID: os.Getpid(), StartedAt: time.Now().UTC()}
	devDir := config.DevDir(dataDir)
	var notes []string
	// The children are watched while dab dev runs: one that dies is
	// restarted; one that keeps dying stops dab dev with its log. The
	// watch ends (cancel) before the deferred Stops run.
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	var watch []func(context.Context)

	// Redis.
	if a.cfg.Explicit("DAB_REDIS_URL") {
		notes = append(notes, "redis:  "+redact.URL(a.cfg.RedisURL)+" (from DAB_REDIS_URL)")
	} else {
		// A password, as every local user can reach 127.0.0.1: kept in the
		// state file (its owner's alone) with the URL clients use.
		password := prev.RedisPassword
		if len(password) < 32 {
			password = randomHex(24)
		}
		r, err := startPreferring(prev.RedisPort, func(port int) (*localsvc.Redis, error) {
			return localsvc.StartRedis(localsvc.RedisOptions{Dir: filepath.Join(devDir, "redis"), Port: port, AOF: true, Password: password})
		})
		switch {
		case err == nil:
			defer r.Stop()
			watch = append(watch, func(ctx context.Context) { a.supervise(ctx, "redis-server", r, fail) })
			a.cfg.RedisURL = r.URL()
			state.RedisPassword = password
			state.RedisPort, _ = strconv.Atoi(r.Addr()[len("127.0.0.1:"):])
			notes = append(notes, "redis:  "+redact.URL(r.URL())+" (redis-server with a password, in the state file; append-only file in "+r.Dir+")")
		case errors.Is(err, localsvc.ErrNotInstalled):
			er, eerr := localsvc.StartEmbeddedRedis(reusePort(prev.RedisPort), password)
			if eerr != nil {
				return eerr
			}
			defer er.Stop()
			a.cfg.RedisURL = er.URL()
			state.RedisPassword = password
			a.log.Warn("dev.redis.embedded", "reason", err.Error(),
				"warning", "using in-process miniredis: queues and asset records are kept in memory and LOST when dab dev stops; install redis-server for durable data")
			notes = append(notes, "redis:  "+redact.URL(er.URL())+" (in-process miniredis with a password, in the state file: NOT durable, install redis-server)")
		default:
			return err
		}
		state.RedisURL = a.cfg.RedisURL
	}

	// S3.
	if a.cfg.Explicit("AWS_S3_BUCKET") {
		notes = append(notes, "s3:     s3://"+a.cfg.S3.Bucket+" (from AWS_S3_BUCKET)")
	} else {
		access, secret := prev.AccessKey, prev.SecretKey
		if access == "" || secret == "" {
			access, secret = "dabdev"+randomHex(4), randomHex(20)
		}
		s, err := startPreferring(prev.S3Port, func(port int) (*localsvc.S3, error) {
			return localsvc.StartS3(localsvc.S3Options{Dir: filepath.Join(devDir, "s3"), Port: port, AccessKey: access, SecretKey: secret})
		})
		var endpoint, where string
		checksum := storage.ChecksumSHA256
		switch {
		case err == nil:
			defer s.Stop()
			watch = append(watch, func(ctx context.Context) { a.supervise(ctx, "versitygw", s, fail) })
			endpoint, where = s.Endpoint(), "versitygw, objects in "+filepath.Join(s.Dir, "buckets", devBucket)
		case errors.Is(err, localsvc.ErrNotInstalled):
			es, eerr := localsvc.StartEmbeddedS3(filepath.Join(devDir, "gofakes3"), reusePort(prev.S3Port))
			if eerr != nil {
				return eerr
			}
			defer es.Stop()
			endpoint, where = es.Endpoint(), "in-process gofakes3: no auth, no checksum checks; install versitygw for a real store"
			checksum = storage.ChecksumOff
			a.log.Warn("dev.s3.embedded", "reason", err.Error(),
				"warning", "using in-process gofakes3: it checks no signatures or checksums; install versitygw to test against a real S3-compatible store")
		default:
			return err
		}
		a.cfg.S3 = config.S3{
			Bucket: devBucket, Region: "us-east-1", Endpoint: endpoint, PathStyle: true,
			AccessKeyID: access, SecretAccessKey: secret, ChecksumMode: checksum,
			MultipartThreshold: a.cfg.S3.MultipartThreshold, PartSize: a.cfg.S3.PartSize, PartConcurrency: a.cfg.S3.PartConcurrency,
		}
		if err := ensureBucket(ctx, a.cfg.S3); err != nil {
			return err
		}
		state.S3Endpoint, state.Bucket, state.AccessKey, state.SecretKey, state.ChecksumMode = endpoint, devBucket, access, secret, checksum
		if u, perr := net.ResolveTCPAddr("tcp", endpoint[len("http://"):]); perr == nil {
			state.S3Port = u.Port
		}
		notes = append(notes, "s3:     s3://"+devBucket+" at "+endpoint+" ("+where+")")
	}

	// The API needs a token: keep the one of the last run, or make one.
	if !a.cfg.Explicit("DAB_ADMIN_TOKEN") {
		a.cfg.AdminToken = prev.AdminToken
		if len(a.cfg.AdminToken) < 16 {
			a.cfg.AdminToken = randomHex(24)
		}
	}
	state.AdminToken = a.cfg.AdminToken
	defer func() {
		// Keep ports and keys for the next start; mark this process gone.
		state.PID = 0
		config.WriteDevState(dataDir, state)
	}()
	wctx, stopWatching := context.WithCancel(ctx)
	defer stopWatching() // before the children's deferred Stops
	for _, w := range watch {
		go w(wctx)
	}
	err = a.serve(ctx, roles{worker: true, watcher: true, http: true}, func() error {
		state.HTTPURL = a.httpURL
		if err := config.WriteDevState(dataDir, state); err != nil {
			return err
		}
		outf(a.stdout, "dab dev is running (pid %d)\n  data:   %s\n", os.Getpid(), dataDir)
		for _, n := range notes {
			outln(a.stdout, "  "+n)
		}
		outf(a.stdout, "  api:    %s (admin token: %s)\n", a.httpURL, a.cfg.AdminToken)
		outf(a.stdout, "          curl -H 'Authorization: Bearer %s' -F type=cyoa -F file=@NODE_intro.png %s/v1/assets\n", a.cfg.AdminToken, a.httpURL)
		drop, _ := filepath.Abs(a.cfg.DropDir)
		outf(a.stdout, "  drop:   %s (drop files into %s/<type>/, e.g. %s/cyoa/forest/NODE_intro.png)\n", drop, drop, drop)
		outf(a.stdout, "Client commands find this dab dev through its data folder; in another terminal (or folder) first run:\n  export DAB_DATA_DIR=%s\nthen try (with the dab binary; from a checkout: go build -o dab ./cmd/dab, then ./dab):\n  dab upload FILE --type cyoa --wait\n  dab assets list\nStop with Ctrl-C.\n", shellQuote(dataDir))
		return nil
	})
	if cause := context.Cause(ctx); err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("dab dev stopped: %w", cause)
	}
	return err
}

// startPreferring starts a child server on the port of the last run, so
// `dab dev` keeps its URLs across restarts, and on a free port when another
// process holds that one (a first start, or a port taken since, has 0: any).
func startPreferring[S any](port int, start func(port int) (S, error)) (S, error) {
	s, err := start(max(port, 0))
	if port > 0 && errors.Is(err, localsvc.ErrPortTaken) {
		return start(0)
	}
	return s, err
}

// reusePort returns p when it is free, and 0 (pick any) otherwise: the
// in-process stand-ins' choice of port, which is checked before they bind.
func reusePort(p int) int {
	if p <= 0 {
		return 0
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return 0
	}
	l.Close()
	return p
}

func ensureBucket(ctx context.Context, c config.S3) error {
	client, err := storage.NewClient(ctx, c)
	if err != nil {
		return err
	}
	_, err = client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(c.Bucket)})
	var owned *s3types.BucketAlreadyOwnedByYou
	var exists *s3types.BucketAlreadyExists
	if err != nil && !errors.As(err, &owned) && !errors.As(err, &exists) {
		return fmt.Errorf("create bucket %s in the local store: %w", c.Bucket, err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
