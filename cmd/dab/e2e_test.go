package main

// End-to-end tests: they build the real dab binary and run it as users and
// operators do, against a real redis-server and versitygw.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

var dabBin string

// testCache points the dab processes of the tests at one cache folder.
var testCache string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dab-e2e-")
	if err != nil {
		panic(err)
	}
	dabBin = filepath.Join(dir, "dab")
	build := exec.Command("go", "build", "-o", dabBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build dab:", err)
		os.Exit(1)
	}
	// One cache of go-graphviz's compiled WebAssembly (wasmcache) for every
	// dab the tests run, each with a HOME of its own: compiled once here,
	// not in every process (about a second of CPU each).
	testCache = "XDG_CACHE_HOME=" + filepath.Join(dir, "cache")
	warm := exec.Command(dabBin, "--help")
	warm.Env = append(os.Environ(), testCache)
	if out, err := warm.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "dab --help: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// e2e is one test's servers and environment for dab processes.
type e2e struct {
	t       *testing.T
	redis   string
	s3      *harness.S3
	dataDir string
	env     []string
	// dir is the working folder of dab processes, so relative defaults
	// (./drop, ./dab-data) never land in the repository.
	dir string
	// redisSrv is the test's redis-server (newE2E), to stop and restart.
	redisSrv *localsvc.Redis
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	r := harness.Redis(t)
	e := newE2EOn(t, r.URL())
	e.redisSrv = r
	return e
}

// newE2EOn is newE2E on the Redis at redisURL (DAB_REDIS_URL).
func newE2EOn(t *testing.T, redisURL string) *e2e {
	t.Helper()
	s := harness.StartS3(t)
	e := &e2e{t: t, redis: redisURL, s3: s, dataDir: filepath.Join(t.TempDir(), "data"), dir: t.TempDir()}
	c := storagetest.Options(s)
	// A clean environment: nothing of the developer's AWS or dab settings leaks in.
	e.env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), testCache,
		"DAB_REDIS_URL=" + redisURL, "DAB_DATA_DIR=" + e.dataDir,
		"AWS_S3_BUCKET=" + c.Bucket, "AWS_REGION=us-east-1", "AWS_ENDPOINT_URL_S3=" + c.Endpoint,
		"AWS_ACCESS_KEY_ID=" + c.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + c.SecretAccessKey,
		"DAB_S3_PATH_STYLE=true", "DAB_MULTIPART_THRESHOLD=6MiB", "DAB_PART_SIZE=5MiB",
		// Any free port: tests run side by side.
		"DAB_HTTP_ADDR=127.0.0.1:0",
	}
	return e
}

// run runs dab to completion and returns stdout, stderr and the exit code.
func (e *e2e) run(extraEnv []string, args ...string) (string, string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, dabBin, args...)
	cmd.Env = append(append([]string{}, e.env...), extraEnv...)
	cmd.Dir = e.dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run dab %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// proc is a long-running dab process whose stderr is watched.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs strings.Builder
	done chan struct{}
}

func (e *e2e) start(extraEnv []string, args ...string) *proc {
	e.t.Helper()
	cmd := exec.Command(dabBin, args...)
	cmd.Env = append(append([]string{}, e.env...), extraEnv...)
	cmd.Dir = e.dir
	return startCmd(e.t, cmd)
}

// startCmd starts a prepared command and watches its stderr.
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Stdout == nil {
		cmd.Stdout = io.Discard
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// waitLog waits until the process logged a line containing s.
func (p *proc) waitLog(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	harness.Eventually(t, timeout, fmt.Sprintf("%q in the log", s), func() bool {
		if strings.Contains(p.output(), s) {
			return true
		}
		select {
		case <-p.done:
			t.Fatalf("process exited before logging %q:\n%s", s, p.output())
		default:
		}
		return false
	}, func() string { return "log:\n" + p.output() })
}

func writeRandomFile(t *testing.T, dir, name string, size int) (string, string) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(size), 1))
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	buf := make([]byte, 64<<10)
	for left := size; left > 0; left -= len(buf) {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		w.Write(buf[:min(left, len(buf))])
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p, hex.EncodeToString(h.Sum(nil))
}

func TestUploadWorkShow(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	e.start(nil, "work")
	dir := t.TempDir()
	small, smallSum := writeRandomFile(t, dir, "NODE_intro.png", 3000)
	big, bigSum := writeRandomFile(t, dir, "EDGE_intro_to_cave.png", 9<<20)

	out, errOut, code := e.run(nil, "upload", small, big, "--type", "cyoa", "--folder", "forest", "--wait", "--json")
	if code != 0 {
		t.Fatalf("upload exit %d: %s", code, errOut)
	}
	var lines []uploadLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var ul uploadLine
		if err := json.Unmarshal([]byte(l), &ul); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, ul)
	}
	if len(lines) != 2 || lines[0].State != "completed" || lines[1].State != "completed" ||
		lines[0].SHA256 != smallSum || lines[1].SHA256 != bigSum || !strings.HasPrefix(lines[0].TaskID, "upload-") {
		t.Fatalf("upload output: %+v", lines)
	}
	var res struct {
		AssetID string `json:"asset_id"`
	}
	json.Unmarshal(lines[1].Result, &res)
	out, errOut, code = e.run(nil, "assets", "show", res.AssetID, "--json")
	if code != 0 {
		t.Fatalf("show exit %d: %s", code, errOut)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatal(err)
	}
	md, _ := rec["metadata"].(map[string]any)
	for k, want := range map[string]any{
		"id": res.AssetID, "name": "EDGE_intro_to_cave.png", "type": "cyoa", "s3_bucket": e.s3.Bucket,
		"s3_key": "cyoa/forest/EDGE_intro_to_cave.png", "size": float64(9 << 20), "sha256": bigSum,
		"content_type": "image/png", "owner": "",
	} {
		if rec[k] != want {
			t.Errorf("record %s = %#v, want %#v", k, rec[k], want)
		}
	}
	if md["graph_role"] != "edge" || md["src_node"] != "intro" || md["dst_node"] != "cave" || md["story"] != "forest" {
		t.Errorf("metadata = %v", md)
	}
	if _, ok := rec["created_at"].(string); !ok {
		t.Errorf("created_at = %#v", rec["created_at"])
	}
	out, _, code = e.run(nil, "assets", "list", "--type", "cyoa")
	if code != 0 || !strings.Contains(out, "cyoa/forest/NODE_intro.png") || !strings.Contains(out, "cyoa/forest/EDGE_intro_to_cave.png") {
		t.Fatalf("list exit %d:\n%s", code, out)
	}
}

func TestCLIErrors(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	file, _ := writeRandomFile(t, t.TempDir(), "a.txt", 10)
	unbound := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(unbound, []byte("read,purchase cli-unbound-purchase-token-01\n"), 0o600)
	const bindIt = "must be bound to that account (read,purchase@alice TOKEN); a system that buys for its users needs the broker scope instead (broker TOKEN)"
	tests := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"unknown type", nil, []string{"upload", file, "--type", "photos"}, 2, "known types are cyoa, generic"},
		{"no file", nil, []string{"upload", "/nonexistent/file"}, 1, "no such file"},
		{"bad env", []string{"DAB_CONCURRENCY=many"}, []string{"work"}, 1, `DAB_CONCURRENCY: "many" is not a whole number`},
		{"wrong secret", []string{"AWS_SECRET_ACCESS_KEY=wrong"}, []string{"work"}, 1, "SignatureDoesNotMatch: the secret key is wrong: check AWS_SECRET_ACCESS_KEY"},
		{"missing bucket", []string{"AWS_S3_BUCKET=not-there"}, []string{"work"}, 1, `bucket "not-there" does not exist`},
		{"redis down", []string{"DAB_REDIS_URL=redis://:pw-secret@127.0.0.1:1/0"}, []string{"work"}, 1, "redis at redis://:xxxxx@127.0.0.1:1/0 is unreachable"},
		{"redis down upload", []string{"DAB_REDIS_URL=redis://127.0.0.1:1/0"}, []string{"upload", file}, 1, "start Redis or fix DAB_REDIS_URL"},
		{"unknown command", nil, []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"no bucket", []string{"AWS_S3_BUCKET="}, []string{"work"}, 1, "AWS_S3_BUCKET is not set"},
		{"price not a number", nil, []string{"upload", file, "--meta", "price=abc"}, 2, `price "abc": it is not a whole number`},
		{"negative price", nil, []string{"upload", file, "--meta", "price=-3"}, 2, "it is negative"},
		{"metadata shadowing a record field", nil, []string{"upload", file, "--meta", "sha256=00"}, 2, "dab's own field"},
		{"unbound purchase token, serve", []string{"DAB_TOKENS_FILE=" + unbound}, []string{"serve"}, 1, bindIt},
		{"unbound purchase token, watch", []string{"DAB_TOKENS_FILE=" + unbound}, []string{"watch"}, 1, bindIt},
		{"server down, secrets in its URL", []string{"DAB_SERVER=http://u:pw-secret@127.0.0.1:1/?token=pw-secret"}, []string{"assets", "list"}, 1, "127.0.0.1:1"},
		{"server down, upload", []string{"DAB_SERVER=http://u:pw-secret@127.0.0.1:1/"}, []string{"upload", file}, 1, "127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, errOut, code := e.run(tt.env, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit %d and %q", code, errOut, tt.code, tt.want)
			}
			if strings.Contains(errOut, "pw-secret") {
				t.Fatalf("password in the output: %s", errOut)
			}
		})
	}
	// Nothing was left in the spool by the failed uploads.
	entries, _ := os.ReadDir(filepath.Join(e.dataDir, "spool"))
	for _, de := range entries {
		if !strings.HasPrefix(de.Name(), ".") {
			t.Fatalf("failed upload left spool entry %s", de.Name())
		}
	}
}

func TestConfigMasksSecrets(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	out, _, code := e.run([]string{"DAB_REDIS_URL=redis://u:topsecret@example.org:6379/0"}, "config")
	if code != 0 || strings.Contains(out, "topsecret") || strings.Contains(out, e.s3.SecretKey) ||
		!strings.Contains(out, "AWS_SECRET_ACCESS_KEY") || !strings.Contains(out, "example.org") {
		t.Fatalf("dab config (exit %d):\n%s", code, out)
	}
}

// TestWorkerKilledMidMultipart kills a worker with SIGKILL while it uploads a
// large file in parts, starts another, and expects the task to complete with
// exactly one object and one record. Asynq hands the task back once the dead
// worker's lease (30s) expires, so this test takes a minute or two.
func TestWorkerKilledMidMultipart(t *testing.T) {
	if testing.Short() {
		t.Skip("takes over a minute: asynq recovers a killed worker's task after its lease expires")
	}
	t.Parallel()
	e := newE2E(t)
	size := 200 << 20
	file, sum := writeRandomFile(t, t.TempDir(), "movie.bin", size)
	slow := []string{"DAB_PART_CONCURRENCY=1"}
	out, errOut, code := e.run(nil, "upload", file, "--json")
	if code != 0 {
		t.Fatalf("upload: %s", errOut)
	}
	var ul uploadLine
	json.Unmarshal([]byte(out), &ul)

	w1 := e.start(slow, "work")
	w1.waitLog(t, "upload.started", 30*time.Second)
	// Kill it once the store holds a part of the file: mid-multipart.
	s3c := storagetest.Client(t, storagetest.Options(e.s3))
	bucket, key := aws.String(e.s3.Bucket), aws.String("generic/movie.bin")
	harness.Eventually(t, time.Minute, "a part of movie.bin in the store", func() bool {
		ups, err := s3c.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: bucket, Prefix: key})
		if err != nil || len(ups.Uploads) == 0 {
			return false
		}
		parts, err := s3c.ListParts(context.Background(), &s3.ListPartsInput{Bucket: bucket, Key: key, UploadId: ups.Uploads[0].UploadId})
		return err == nil && len(parts.Parts) > 0
	}, func() string { return "worker log:\n" + w1.output() })
	if err := w1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-w1.done
	st := storagetest.Store(t, e.s3)
	if _, _, err := st.Get(context.Background(), "generic/movie.bin"); err == nil {
		t.Fatal("the upload finished before the kill; the test needs a bigger file")
	}

	w2 := e.start(nil, "work")
	w2.waitLog(t, `"msg":"upload.done"`, 3*time.Minute)

	rc, n, err := st.Get(context.Background(), "generic/movie.bin")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	io.Copy(h, rc)
	rc.Close()
	if n != int64(size) || hex.EncodeToString(h.Sum(nil)) != sum {
		t.Fatalf("object has %d bytes sha %x, want %d bytes %s", n, h.Sum(nil), size, sum)
	}
	rdb := redis.NewClient(&redis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(e.redis, "redis://"), "/0")})
	defer rdb.Close()
	if count, _ := asset.NewStore(rdb, "dab:").Count(context.Background(), ""); count != 1 {
		t.Fatalf("%d records, want exactly 1", count)
	}
	// The killed run recorded nothing; the run after it, one event.
	if events := recordedEvents(t, e); len(events) != 1 {
		t.Fatalf("asset.recorded events %v, want one for the one asset", events)
	}
	for id, n := range recordedEvents(t, e) {
		if n != 1 {
			t.Fatalf("asset %s: %d asset.recorded events, want 1", id, n)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(e.dataDir, "spool", ul.SpoolID)); len(entries) != 0 {
		t.Fatal("spool entry left after success")
	}
}

// TestDevRestartKeepsData runs `dab dev` with real child servers, uploads
// through it from another process that finds it by its data folder, stops it
// with SIGTERM (exit 0), starts it again while another program holds the
// ports of its first run, and finds the asset still there.
func TestDevRestartKeepsData(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	e := &e2e{t: t, dataDir: dataDir, dir: t.TempDir(), env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), testCache, "DAB_DATA_DIR=" + dataDir, "DAB_HTTP_ADDR=127.0.0.1:0"}}
	if home, err := os.UserHomeDir(); err == nil {
		// Let dab find versitygw where `go install` put it.
		e.env = append(e.env, "GOPATH="+filepath.Join(home, "go"))
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		e.env = append(e.env, "GOPATH="+gp)
	}
	dev := e.start(nil, "dev")
	dev.waitLog(t, "worker.started", 30*time.Second)
	if strings.Contains(dev.output(), "embedded") {
		t.Fatalf("dab dev fell back to a stand-in although redis-server and versitygw are installed:\n%s", dev.output())
	}
	// A second dab dev on the same data folder is refused, whatever its
	// state file says (two started at once would both find none running).
	if out, errOut, code := e.run(nil, "dev"); code != 1 || !strings.Contains(errOut, "another dab dev") || !strings.Contains(errOut, dataDir) {
		t.Fatalf("a second dab dev: exit %d\n%s%s", code, out, errOut)
	}
	file, _ := writeRandomFile(t, t.TempDir(), "HOPTO_end.png", 100)
	out, errOut, code := e.run(nil, "upload", file, "--type", "cyoa", "--wait")
	if code != 0 || !strings.Contains(out, "completed") {
		t.Fatalf("upload through dab dev: exit %d\n%s\n%s", code, out, errOut)
	}
	dev.cmd.Process.Signal(syscall.SIGTERM)
	<-dev.done
	if c := dev.cmd.ProcessState.ExitCode(); c != 0 {
		t.Fatalf("dab dev exit %d after SIGTERM:\n%s", c, dev.output())
	}

	// Another program took the ports of the last run meanwhile: dab dev
	// starts its servers on others, with the same data.
	st, err := config.ReadDevState(dataDir)
	if err != nil || st == nil || st.RedisPort == 0 || st.S3Port == 0 {
		t.Fatalf("dev state after the first run: %+v %v", st, err)
	}
	for _, port := range []int{st.RedisPort, st.S3Port} {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("hold the last run's port %d: %v", port, err)
		}
		defer l.Close()
	}

	dev2 := e.start(nil, "dev")
	dev2.waitLog(t, "worker.started", 30*time.Second)
	out, errOut, code = e.run(nil, "assets", "list", "--json")
	if code != 0 || !strings.Contains(out, "cyoa/HOPTO_end.png") || !strings.Contains(out, `"hop_target": "end"`) {
		t.Fatalf("after restart: exit %d\n%s\n%s\ndab dev:\n%s", code, out, errOut, dev2.output())
	}
	st2, err := config.ReadDevState(dataDir)
	if err != nil || st2 == nil || st2.RedisPort == st.RedisPort || st2.S3Port == st.S3Port || st2.RedisPort == 0 || st2.S3Port == 0 {
		t.Fatalf("dev state after a restart with its ports taken: %+v %v (before: redis %d, s3 %d)", st2, err, st.RedisPort, st.S3Port)
	}
}

// TestDevRestartsItsRedis: the redis-server `dab dev` started dies (here:
// SHUTDOWN, as a crash or the OOM killer would end it); dab dev restarts it
// on the same port with the same data, and client commands work again.
func TestDevRestartsItsRedis(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	e := &e2e{t: t, dataDir: dataDir, dir: t.TempDir(), env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), testCache, "DAB_DATA_DIR=" + dataDir, "DAB_HTTP_ADDR=127.0.0.1:0"}}
	if gp := os.Getenv("GOPATH"); gp != "" {
		e.env = append(e.env, "GOPATH="+gp)
	} else if home, err := os.UserHomeDir(); err == nil {
		e.env = append(e.env, "GOPATH="+filepath.Join(home, "go"))
	}
	dev := e.start(nil, "dev")
	dev.waitLog(t, "worker.started", 30*time.Second)
	st, err := config.ReadDevState(dataDir)
	if err != nil || st == nil || st.RedisPort == 0 {
		t.Fatalf("dev state: %+v %v", st, err)
	}
	file, _ := writeRandomFile(t, t.TempDir(), "before.bin", 100)
	if out, errOut, code := e.run(nil, "upload", file, "--wait"); code != 0 {
		t.Fatalf("upload: exit %d\n%s%s", code, out, errOut)
	}
	// Its Redis wants the password of the state file: another local user
	// gets nothing from it.
	open := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", st.RedisPort)})
	if err := open.Ping(context.Background()).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("dab dev's Redis without its password: %v, want NOAUTH", err)
	}
	open.Close()
	if strings.Contains(dev.output(), st.RedisPassword) {
		t.Fatal("dab dev printed its Redis password")
	}
	opts, err := redis.ParseURL(st.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	rdb.Do(context.Background(), "SHUTDOWN") // the connection drops: no answer to check
	dev.waitLog(t, "dev.child_died", 30*time.Second)
	dev.waitLog(t, "dev.child_restarted", 30*time.Second)
	// Same port, same data (its append-only file): the record is there.
	out, errOut, code := e.run(nil, "assets", "list")
	if code != 0 || !strings.Contains(out, "generic/before.bin") {
		t.Fatalf("assets list after the restart: exit %d\n%s%s", code, out, errOut)
	}
}
