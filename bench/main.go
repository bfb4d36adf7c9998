// Command bench measures dab next to s5cmd, the fast S3 uploader one would
// run instead, and asynq's own rate: the same files (byte for byte) go
// through dab's entry points (drop folder, `dab upload`, the HTTP API) and
// through `s5cmd cp`, one after the other against one freshly started
// redis-server and versitygw, and one table of ratios is printed at the end.
//
// Usage (from the repository root; `make bench` runs bench/pipeline.sh, which
// builds dab and s5cmd and then this driver):
//
//	./bench/pipeline.sh [-quick] [-files 2000] [-big 1GiB] [-backlog 100000] ...
//
// It is a separate module so its dependencies stay out of dab's go.mod; s5cmd
// is built from a module of its own (bench/tools) for the same reason.
package main

import (
	"context"
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/internal/storage"
)

// options are the driver's flags.
type options struct {
	dab, s5cmd   string
	files        int
	fileSize     int
	big          int64
	concurrency  int
	settle       time.Duration
	clients      int
	purchases    int
	only         []string // lines to run; all when empty
	rate         int
	steady       time.Duration
	backlog      int
	backlogSize  int
	backlogS5cmd bool
	timeout      time.Duration
	logs         string // folder for the logs of dab's processes; none when empty
}

// The store the bench starts: its credentials, region and bucket.
const (
	accessKey = "bench"
	secretKey = "bench-secret-key"
	region    = "us-east-1"
	bucket    = "dab-bench"
)

func main() {
	var o options
	var big string
	flag.StringVar(&o.dab, "dab", "bin/dab", "dab binary to measure")
	flag.StringVar(&o.s5cmd, "s5cmd", "bin/s5cmd", "s5cmd binary to compare with (pipeline.sh builds v2.3.0 from bench/tools)")
	flag.IntVar(&o.files, "files", 2000, "P1: number of small files")
	flag.IntVar(&o.fileSize, "file-size", 4096, "P1 and P4: size of each small file in bytes")
	flag.StringVar(&big, "big", "1GiB", "P2: size of the large file")
	flag.IntVar(&o.concurrency, "concurrency", 0, "DAB_CONCURRENCY of every `dab work` and the concurrency of P3's asynq server (0: dab's default)")
	flag.DurationVar(&o.settle, "settle", time.Second, "DAB_SETTLE of every `dab watch`")
	flag.IntVar(&o.clients, "clients", 16, "P1c and P1d: concurrent curl clients")
	flag.IntVar(&o.purchases, "purchases", 5000, "P3: number of purchases (and of no-op tasks)")
	flag.IntVar(&o.rate, "rate", 100, "P4: files moved in per second")
	flag.DurationVar(&o.steady, "steady", 10*time.Second, "P4: how long files are moved in at -rate")
	flag.IntVar(&o.backlog, "backlog", 100000, "P5: files waiting in the drop folder when `dab watch` starts")
	flag.IntVar(&o.backlogSize, "backlog-size", 512, "P5: size of each backlog file in bytes")
	flag.BoolVar(&o.backlogS5cmd, "backlog-s5cmd", true, "P5: copy the backlog with s5cmd too (false skips it)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "longest wait for the records of one run")
	flag.StringVar(&o.logs, "logs", "", "folder that keeps the log of every `dab work` and `dab watch` (<line>-<role>.log), for a timeline of a run")
	only := flag.String("only", "", "comma list of the lines to run (P1a,P1b,P1c,P1d,P2,P3,P4,P5); all when empty")
	quick := flag.Bool("quick", false, "scale everything down for a fast check (200 files, 64MiB, 3s of P4, 2000 backlog; P3 stays whole: fewer tasks time mostly the workers' idle nap); explicit flags still win")
	flag.Parse()
	if o.logs != "" {
		if err := os.MkdirAll(o.logs, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "bench: -logs:", err)
			os.Exit(2)
		}
	}
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		scale := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		scale("files", func() { o.files = 200 })
		scale("big", func() { big = "64MiB" })
		scale("steady", func() { o.steady = 3 * time.Second })
		scale("backlog", func() { o.backlog = 2000 })
	}
	for _, name := range strings.Split(*only, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if !slices.Contains(lines, name) {
			fail(fmt.Errorf("-only: no line %q: use %s", name, strings.Join(lines, ",")))
		}
		o.only = append(o.only, name)
	}
	var err error
	if o.big, err = config.ParseBytes(big); err != nil {
		fail(fmt.Errorf("-big: %w", err))
	}
	if o.concurrency == 0 {
		if o.concurrency, err = dabDefaultConcurrency(); err != nil {
			fail(err)
		}
	}
	if o.files < 1 || o.fileSize < 1 || o.big < 1 || o.clients < 1 || o.purchases < 1 || o.backlog < 1 || o.backlogSize < 1 ||
		o.rate < 1 || o.steady.Seconds()*float64(o.rate) < 1 {
		fail(errors.New("every count and size must be positive, and P4 must move at least one file (-rate x -steady)"))
	}
	for _, p := range []*string{&o.dab, &o.s5cmd} {
		if *p, err = filepath.Abs(*p); err != nil {
			fail(err)
		}
	}
	// Ctrl-C or a SIGTERM ends the run through its deferred clean-ups, so no
	// child process outlives it (they also get SIGKILL if the driver dies).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o)
	stop()
	if err != nil {
		fail(err)
	}
}

// lines are the bench's lines, in the order they run.
var lines = []string{"P1a", "P1b", "P1c", "P1d", "P2", "P3", "P4", "P5"}

// runs says whether the line is to run (-only).
func (o options) runs(line string) bool { return len(o.only) == 0 || slices.Contains(o.only, line) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// dabDefaultConcurrency is DAB_CONCURRENCY's default on this machine, read
// from dab's own settings so the bench follows it.
func dabDefaultConcurrency() (int, error) {
	for _, s := range config.Settings() {
		if s.Env == "DAB_CONCURRENCY" {
			return strconv.Atoi(s.Default)
		}
	}
	return 0, errors.New("dab has no DAB_CONCURRENCY setting: pass -concurrency")
}

// bench is what every run shares: the servers, the clients and the settings.
type bench struct {
	opt   options
	work  string // scratch folder, removed at the end
	redis *localsvc.Redis
	s3url string
	rdb   *redis.Client
	store *s3.Client
	// env is the environment of every child: the driver's own without any
	// DAB_* or AWS_* variable (so the user's shell cannot change a run), plus
	// the store's credentials and region (all s5cmd needs; runEnv adds
	// dab's settings).
	env []string
}

func run(ctx context.Context, o options) error {
	for _, bin := range []string{o.dab, o.s5cmd} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%w (bench/pipeline.sh builds it)", err)
		}
	}
	work, err := os.MkdirTemp("", "dab-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	r, err := localsvc.StartRedis(localsvc.RedisOptions{Dir: filepath.Join(work, "redis")})
	if err != nil {
		return err
	}
	defer r.Stop()
	s, err := localsvc.StartS3(localsvc.S3Options{Dir: filepath.Join(work, "s3"), AccessKey: accessKey, SecretKey: secretKey})
	if err != nil {
		return err
	}
	defer s.Stop()
	store, err := storage.NewClient(ctx, config.S3{Bucket: bucket, Region: region, Endpoint: s.Endpoint(), PathStyle: true,
		AccessKeyID: accessKey, SecretAccessKey: secretKey, ChecksumMode: storage.ChecksumSHA256})
	if err != nil {
		return err
	}
	if _, err := store.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DAB_") && !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	env = append(env, "AWS_ACCESS_KEY_ID="+accessKey, "AWS_SECRET_ACCESS_KEY="+secretKey, "AWS_REGION="+region)
	b := &bench{opt: o, work: work, redis: r, s3url: s.Endpoint(), rdb: rdb, store: store, env: env}

	fmt.Printf("dab next to %s (its default --numworkers, 256: what a user would run) on one redis-server and versitygw on loopback, %d CPUs\n",
		s5cmdVersion(o.s5cmd), runtime.NumCPU())
	fmt.Printf("dab: DAB_CONCURRENCY=%d per `dab work`, DAB_SETTLE=%s; each run has its own key prefix, host queue, data and drop folders\n\n", o.concurrency, o.settle)

	var t table
	var p1a float64
	if o.runs("P1a") {
		if p1a, err = b.p1Drop(ctx, &t); err != nil {
			return fmt.Errorf("P1a: %w", err)
		}
	}
	for _, step := range []struct {
		name string
		run  func(context.Context, *table) error
	}{{"P1b", b.p1Upload}, {"P1c", b.p1HTTP}, {"P1d", b.p1HTTPKeepAlive}, {"P2", b.p2Big}, {"P3", b.p3Purchases}, {"P4", b.p4Steady}} {
		if !o.runs(step.name) {
			continue
		}
		if err := step.run(ctx, &t); err != nil {
			return fmt.Errorf("%s: %w", step.name, err)
		}
	}
	var checkErr error
	if o.runs("P5") {
		checkErr = b.p5Backlog(ctx, &t, p1a)
		if checkErr != nil && !errors.Is(checkErr, errCheck) {
			return fmt.Errorf("P5: %w", checkErr)
		}
	}
	t.print(os.Stdout)
	printLegend(o)
	return checkErr
}

// s5cmdVersion names the s5cmd module version the binary was built from
// (s5cmd's own `version` says v0.0.0-dev when built as a dependency).
func s5cmdVersion(bin string) string {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "s5cmd"
	}
	for _, m := range append(info.Deps, &info.Main) {
		if m != nil && strings.HasPrefix(m.Path, "github.com/peak/s5cmd") {
			return "s5cmd " + m.Version
		}
	}
	return "s5cmd"
}

func printLegend(o options) {
	fmt.Printf(`
  dab: from the first file handed to dab (moved into the drop folder, the start of `+"`dab upload`"+`,
    the first PUT) until the driver saw the last asset record in Redis. On the way dab spools each
    file (a rename out of the drop folder, a copy from `+"`dab upload`"+` and the API), hashes and fsyncs
    it, enqueues it, uploads it (a conditional put with a checksum), runs its plugin, records it.
    A poller reads the record count every 5 ms, then sends EXISTS for the records not seen yet (a
    record's created_at is its spool time, not its record time).
  s5cmd: `+"`s5cmd --endpoint-url URL cp \"DIR/*\" s3://bucket/PREFIX/`"+` (or the one file) of a
    byte-identical set, until it exits; the bucket is then listed to check every object is there.
  dab/s5cmd (time): dab's time over s5cmd's (2.00: dab takes twice as long). P3 shows a rate
    instead: dab's purchases/s over asynq's no-op tasks/s (an asynq server in the driver with
    concurrency %d and the task options of a purchase), both enqueued by %d clients at once.
    P5 also shows its files/s over P1a's (1.00: a backlog costs per file what a burst does).
  peak RSS: each process's high-water mark of resident memory (getrusage once it has exited).
  P4: latency from a file's move into the drop folder to its record; target DAB_SETTLE + 250 ms.
`, o.concurrency, enqueuers)
}
