package main

// One run's own corner of the shared servers, and the helpers every run uses:
// identical file sets, s5cmd, formatting.

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dab-assets/dab/internal/localsvc"
)

// adminToken is DAB_ADMIN_TOKEN of every `dab watch` (P1c's clients use it).
const adminToken = "bench-admin-token-0123456789"

// runEnv keeps one run apart from the others on the shared Redis and bucket:
// its own key prefix (so its records are counted alone), host ID (so its
// upload queue is its own), data folder (spool, failed files), drop folder,
// and S3 keys under generic/<name>/ (dab never overwrites an object).
type runEnv struct {
	b       *bench
	name    string
	dir     string
	prefix  string
	hostID  string
	env     []string
	servers []*child // the dab roles started, stopped by stopAll
}

func (b *bench) newRun(name string) (*runEnv, error) {
	r := &runEnv{b: b, name: name, dir: filepath.Join(b.work, name), prefix: "bench-" + name + ":", hostID: "bench-" + name}
	// The run's folder below the type folder exists before the watcher
	// starts, so it is watched from the first moment.
	if err := os.MkdirAll(r.target(), 0o750); err != nil {
		return nil, err
	}
	r.env = append(slices.Clone(b.env),
		"DAB_REDIS_URL="+b.redis.URL(), "DAB_KEY_PREFIX="+r.prefix, "DAB_HOST_ID="+r.hostID,
		"DAB_DATA_DIR="+filepath.Join(r.dir, "data"), "DAB_DROP_DIR="+filepath.Join(r.dir, "drop"),
		"DAB_SETTLE="+b.opt.settle.String(), "DAB_CONCURRENCY="+strconv.Itoa(b.opt.concurrency),
		"AWS_S3_BUCKET="+bucket, "AWS_ENDPOINT_URL_S3="+b.s3url, "DAB_S3_PATH_STYLE=true",
		"DAB_ADMIN_TOKEN="+adminToken)
	return r, nil
}

// target is the run's folder in the drop folder: drop/generic/<name>.
func (r *runEnv) target() string { return filepath.Join(r.dir, "drop", "generic", r.name) }

// failedDir is where dab puts files it cannot upload (DAB_FAILED_DIR's default).
func (r *runEnv) failedDir() string { return filepath.Join(r.dir, "data", "failed") }

// key is the S3 key dab gives file name of this run (type generic, folder name).
func (r *runEnv) key(name string) string { return "generic/" + r.name + "/" + name }

// command is `dab args...` in the run's environment, on a free DAB_HTTP_ADDR
// of its own (returned).
func (r *runEnv) command(args ...string) (*exec.Cmd, string, error) {
	port, err := localsvc.FreePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(r.b.opt.dab, args...)
	cmd.Env = append(slices.Clone(r.env), "DAB_HTTP_ADDR="+addr)
	return cmd, addr, nil
}

// readyLines are the log messages after which a role takes work.
var readyLines = map[string]string{"work": `"msg":"worker.started"`, "watch": `"msg":"watcher.started"`}

// start starts `dab role` (work or watch) and waits until it is ready.
func (r *runEnv) start(ctx context.Context, role string) (*child, error) {
	cmd, addr, err := r.command(role)
	if err != nil {
		return nil, err
	}
	logFile := ""
	if r.b.opt.logs != "" {
		logFile = filepath.Join(r.b.opt.logs, r.name+"-"+role+".log")
	}
	c, err := startChild("dab "+role, cmd, readyLines[role], logFile)
	if err != nil {
		return nil, err
	}
	c.addr = addr
	r.servers = append(r.servers, c)
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	if role == "watch" {
		if err := c.waitHTTP(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// stopAll stops the run's dab processes and returns their peak RSS
// ("watch 25 MiB, work 30 MiB"). With a table, errors they logged become
// notes. It is deferred too, so every exit path stops them.
func (r *runEnv) stopAll(t *table) string {
	var parts []string
	for _, c := range r.servers {
		parts = append(parts, strings.TrimPrefix(c.name, "dab ")+" "+mib(c.stop()))
		if s := c.errorLog.summary(); s != "" && t != nil {
			t.note("%s: %s logged %s", strings.ToUpper(r.name[:1])+r.name[1:], c.name, s)
		}
	}
	return strings.Join(parts, ", ")
}

// cpu is the CPU time, in seconds, the run's stopped processes named name
// ("dab work") used.
func (r *runEnv) cpu(name string) float64 {
	var sec float64
	for _, c := range r.servers {
		if c.name == name {
			sec += c.cpu()
		}
	}
	return sec
}

// makeFiles writes n files of size bytes, f000000.bin and on, into dir and
// returns their names. The bytes come from a ChaCha8 stream seeded by seed,
// so two sets made with the same seed are byte-identical (dab's and s5cmd's).
func makeFiles(dir string, n, size int, seed string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	rng := newStream(seed)
	names := make([]string, n)
	buf := make([]byte, size)
	for i := range n {
		names[i] = fmt.Sprintf("f%06d.bin", i)
		rng.Read(buf)
		if err := os.WriteFile(filepath.Join(dir, names[i]), buf, 0o640); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// makeBigFile writes one file of size bytes at path, seeded like makeFiles.
func makeBigFile(path string, size int64, seed string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, newStream(seed), size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newStream(seed string) *rand.ChaCha8 {
	var key [32]byte
	copy(key[:], seed)
	return rand.NewChaCha8(key)
}

// copied is one `s5cmd cp`.
type copied struct {
	seconds float64
	rss     int64
}

// s5cmdCopy runs `s5cmd cp SRC s3://bucket/PREFIX/` (SRC a file or a quoted
// "DIR/*" glob, expanded by s5cmd itself) with s5cmd's default number of
// workers, and checks that the bucket then holds objects under PREFIX.
func (b *bench) s5cmdCopy(ctx context.Context, src, prefix string, objects int) (copied, error) {
	cmd := exec.Command(b.opt.s5cmd, "--endpoint-url", b.s3url, "cp", src, "s3://"+bucket+"/"+prefix+"/")
	cmd.Env = b.env // the AWS_* credentials and region
	start := time.Now()
	c, err := startChild("s5cmd", cmd, "", "")
	if err != nil {
		return copied{}, err
	}
	defer c.stop()
	if err := c.wait(ctx); err != nil {
		return copied{}, err
	}
	elapsed := time.Since(start).Seconds()
	n, err := b.countObjects(ctx, prefix+"/")
	if err != nil {
		return copied{}, err
	}
	if n != objects {
		return copied{}, fmt.Errorf("s5cmd copied %d objects, want %d", n, objects)
	}
	return copied{seconds: elapsed, rss: c.peakRSS()}, nil
}

func (b *bench) countObjects(ctx context.Context, prefix string) (int, error) {
	n := 0
	pages := s3.NewListObjectsV2Paginator(b.store, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return 0, err
		}
		n += len(page.Contents)
	}
	return n, nil
}

// progress tells the person waiting where the run is (the table comes last).
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
