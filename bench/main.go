// Command bench measures dab's upload pipeline next to what one would write
// instead: a plain AWS SDK uploader (concurrent PutObject calls for small
// files, the SDK's transfer manager for a large one). Both run in one go,
// against the same freshly started redis-server and versitygw, and the
// figures are printed side by side with dab's as ratios of the baseline's.
//
// Usage (from the repository root; `make bench` does this):
//
//	go build -o bin/dab ./cmd/dab
//	cd bench && go run . -dab ../bin/dab [-files 2000] [-file-size 4096] [-big 1GiB]
//
// It is a separate module so the baseline's dependency (the transfer
// manager) stays out of dab's go.mod.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	tm "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/worker/task"
)

type result struct {
	Files   int     `json:"files"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	PeakRSS int64   `json:"peak_rss_bytes"`
	// SpoolSeconds is the part of Seconds `dab upload` took (dab only).
	SpoolSeconds float64 `json:"spool_seconds,omitempty"`
}

func (r result) filesPerSec() float64 { return float64(r.Files) / r.Seconds }
func (r result) mibPerSec() float64   { return float64(r.Bytes) / (1 << 20) / r.Seconds }

func main() {
	var (
		dabBin      = flag.String("dab", "../bin/dab", "dab binary to measure")
		nFiles      = flag.Int("files", 2000, "number of small files")
		fileSize    = flag.Int("file-size", 4096, "size of each small file")
		bigSize     = flag.String("big", "1GiB", "size of the large file")
		concurrency = flag.Int("concurrency", 8, "worker concurrency and baseline parallelism")
		baseline    = flag.String("baseline", "", "internal: run the baseline uploader on this folder or file and print a JSON result")
		prefix      = flag.String("prefix", "", "internal: key prefix for the baseline")
		settle      = flag.Duration("settle", time.Second, "DAB_SETTLE for the drop-folder runs")
	)
	flag.Parse()
	if *baseline != "" {
		r, err := runBaseline(*baseline, *prefix, *concurrency)
		if err != nil {
			fmt.Fprintln(os.Stderr, "baseline:", err)
			os.Exit(1)
		}
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	big, err := config.ParseBytes(*bigSize)
	if err != nil {
		fail(err)
	}
	if err := run(*dabBin, *nFiles, *fileSize, big, *concurrency, *settle); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func run(dabBin string, nFiles, fileSize int, bigSize int64, concurrency int, settle time.Duration) error {
	dabBin, err := filepath.Abs(dabBin)
	if err != nil {
		return err
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
	s, err := localsvc.StartS3(localsvc.S3Options{Dir: filepath.Join(work, "s3"), AccessKey: "bench", SecretKey: "bench-secret-key"})
	if err != nil {
		return err
	}
	defer s.Stop()
	s3cfg := config.S3{Bucket: "dab-bench", Region: "us-east-1", Endpoint: s.Endpoint(), PathStyle: true,
		AccessKeyID: "bench", SecretAccessKey: "bench-secret-key", ChecksumMode: config.ChecksumSHA256}
	client, err := storage.NewClient(context.Background(), s3cfg)
	if err != nil {
		return err
	}
	if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(s3cfg.Bucket)}); err != nil {
		return err
	}
	env := append(os.Environ(),
		"DAB_REDIS_URL="+r.URL(), "DAB_DATA_DIR="+filepath.Join(work, "data"),
		"AWS_S3_BUCKET="+s3cfg.Bucket, "AWS_REGION=us-east-1", "AWS_ENDPOINT_URL_S3="+s.Endpoint(),
		"AWS_ACCESS_KEY_ID=bench", "AWS_SECRET_ACCESS_KEY=bench-secret-key", "DAB_S3_PATH_STYLE=true",
		"DAB_CONCURRENCY="+strconv.Itoa(concurrency))

	small := filepath.Join(work, "small")
	if err := makeFiles(small, nFiles, fileSize); err != nil {
		return err
	}
	bigFile := filepath.Join(work, "big", "big.bin")
	if err := makeFiles(filepath.Dir(bigFile), 1, int(bigSize)); err != nil {
		return err
	}
	os.Rename(filepath.Join(filepath.Dir(bigFile), "f00000.bin"), bigFile)

	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	records := asset.NewStore(rdb, "dab:")

	fmt.Printf("dab upload pipeline vs plain AWS SDK uploader, versitygw on loopback, %d-way concurrency\n\n", concurrency)
	dabSmall, err := runDab(dabBin, env, records, small, "small", nFiles)
	if err != nil {
		return err
	}
	baseSmall, err := runSelf(small, "baseline-small", concurrency, env)
	if err != nil {
		return err
	}
	dabBig, err := runDab(dabBin, env, records, filepath.Dir(bigFile), "big", nFiles+1)
	if err != nil {
		return err
	}
	baseBig, err := runSelf(bigFile, "baseline-big", concurrency, env)
	if err != nil {
		return err
	}
	report(fmt.Sprintf("%d files of %d B", nFiles, fileSize), dabSmall, baseSmall)
	report(fmt.Sprintf("1 file of %s", config.FormatBytes(bigSize)), dabBig, baseBig)
	httpBig, err := runHTTPUpload(dabBin, env, work, bigFile)
	if err != nil {
		return err
	}
	fmt.Printf("1 file of %s PUT through the HTTP API of `dab watch`\n", config.FormatBytes(bigSize))
	fmt.Printf("  dab  %8.1f MiB/s into the spool, server peak RSS %.1f MiB\n\n", httpBig.mibPerSec(), float64(httpBig.PeakRSS)/(1<<20))
	if err := runPurchases(dabBin, env, rdb, r); err != nil {
		return err
	}
	have := nFiles + 1
	for _, run := range []struct {
		mode  string
		n     int
		every time.Duration
	}{
		{"moved", nFiles, 0}, {"copied", nFiles, 0},
		// One file at a time on an idle pipeline: the latency floor.
		{"moved", 50, 100 * time.Millisecond}, {"copied", 50, 100 * time.Millisecond},
	} {
		d, err := runDrop(dabBin, env, records, work, run.mode, run.n, fileSize, settle, have, run.every)
		if err != nil {
			return err
		}
		have += run.n
		how := "at once"
		if run.every > 0 {
			how = "one every " + run.every.String()
		}
		fmt.Printf("drop folder, %d files of %d B %s in, %s (DAB_SETTLE=%s)\n", run.n, fileSize, run.mode, how, settle)
		fmt.Printf("  dab  %8.1f files/s (dab/baseline %.2f)   latency p50 %s  p99 %s  max %s\n\n",
			d.filesPerSec(), d.filesPerSec()/baseSmall.filesPerSec(), d.p50.Round(time.Millisecond), d.p99.Round(time.Millisecond), d.max.Round(time.Millisecond))
	}
	fmt.Println("\ndab: `dab upload` (spool: copy + SHA-256 + fsync, enqueue) and `dab work` (conditional put with")
	fmt.Println("SHA-256, verify, plugin, Redis record), timed until the last record exists; peak RSS is the worker's.")
	fmt.Println("baseline: PutObject per file (small) / transfer manager UploadObject (big), no spool, no records.")
	fmt.Println("drop folder: `dab watch` + `dab work`; latency from a file's arrival (rename into the folder, or the end")
	fmt.Println("of its write) to its record. Copied files wait DAB_SETTLE by design; moved files are taken at once.")
	return nil
}

func report(what string, d, b result) {
	fmt.Printf("%s\n", what)
	fmt.Printf("  %-10s %10s %10s %12s\n", "", "files/s", "MiB/s", "peak RSS")
	fmt.Printf("  %-10s %10.1f %10.1f %9.1f MiB\n", "dab", d.filesPerSec(), d.mibPerSec(), float64(d.PeakRSS)/(1<<20))
	fmt.Printf("  %-10s %10.1f %10.1f %9.1f MiB\n", "baseline", b.filesPerSec(), b.mibPerSec(), float64(b.PeakRSS)/(1<<20))
	fmt.Printf("  (dab: %.2fs of %.2fs in `dab upload`, spooling and queueing)\n", d.SpoolSeconds, d.Seconds)
	fmt.Printf("  %-10s %10.2f %10.2f %12.2f\n\n", "dab/base", d.filesPerSec()/b.filesPerSec(), d.mibPerSec()/b.mibPerSec(), float64(d.PeakRSS)/float64(b.PeakRSS))
}

func makeFiles(dir string, n, size int) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	buf := make([]byte, min(size, 4<<20))
	for i := range n {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%05d.bin", i)))
		if err != nil {
			return err
		}
		w := bufio.NewWriter(f)
		for left := size; left > 0; left -= len(buf) {
			rand.Read(buf)
			w.Write(buf[:min(left, len(buf))])
		}
		if err := w.Flush(); err != nil {
			return err
		}
		f.Close()
	}
	return nil
}

// runDab starts a fresh `dab work`, uploads every file of dir with `dab
// upload`, and waits until the records number wantRecords.
func runDab(dabBin string, env []string, records *asset.Store, dir, folder string, wantRecords int) (result, error) {
	worker := exec.Command(dabBin, "work")
	worker.Env = env
	worker.Stdout, worker.Stderr = io.Discard, io.Discard
	if err := worker.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		worker.Process.Signal(os.Interrupt)
		worker.Wait()
	}()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return result{}, err
	}
	args := []string{"upload", "--folder", folder}
	var total int64
	for _, e := range entries {
		args = append(args, filepath.Join(dir, e.Name()))
		if info, err := e.Info(); err == nil {
			total += info.Size()
		}
	}
	time.Sleep(500 * time.Millisecond) // let the worker finish its start-up checks
	start := time.Now()
	up := exec.Command(dabBin, args...)
	up.Env = env
	if out, err := up.CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("dab upload: %v: %s", err, lastLine(string(out)))
	}
	spooled := time.Since(start).Seconds()
	for {
		n, err := records.Count(context.Background(), "")
		if err != nil {
			return result{}, err
		}
		if int(n) >= wantRecords {
			break
		}
		if time.Since(start) > 30*time.Minute {
			return result{}, fmt.Errorf("only %d of %d records after 30 minutes", n, wantRecords)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return result{Files: len(entries), Bytes: total, Seconds: time.Since(start).Seconds(), PeakRSS: peakRSS(worker.Process.Pid), SpoolSeconds: spooled}, nil
}

// runSelf runs this program as the baseline uploader in a child process, so
// its peak RSS is its own.
func runSelf(path, prefix string, concurrency int, env []string) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(self, "-baseline", path, "-prefix", prefix, "-concurrency", strconv.Itoa(concurrency))
	cmd.Env = env
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("baseline: %w", err)
	}
	var r result
	return r, json.Unmarshal(out, &r)
}

// runBaseline is what one would write without dab.
func runBaseline(path, prefix string, concurrency int) (result, error) {
	ctx := context.Background()
	c := config.S3{Bucket: os.Getenv("AWS_S3_BUCKET"), Region: "us-east-1", Endpoint: os.Getenv("AWS_ENDPOINT_URL_S3"), PathStyle: true,
		AccessKeyID: os.Getenv("AWS_ACCESS_KEY_ID"), SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY")}
	client, err := storage.NewClient(ctx, c)
	if err != nil {
		return result{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	if !st.IsDir() {
		f, err := os.Open(path)
		if err != nil {
			return result{}, err
		}
		defer f.Close()
		up := tm.New(client, func(o *tm.Options) { o.Concurrency = 4; o.PartSizeBytes = 8 << 20 })
		if _, err := up.UploadObject(ctx, &tm.UploadObjectInput{
			Bucket: aws.String(c.Bucket), Key: aws.String(prefix + "/" + filepath.Base(path)), Body: f,
		}); err != nil {
			return result{}, err
		}
		return result{Files: 1, Bytes: st.Size(), Seconds: time.Since(start).Seconds(), PeakRSS: peakRSS(os.Getpid())}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return result{}, err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		first error
		jobs  = make(chan string)
	)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range jobs {
				f, err := os.Open(filepath.Join(path, name))
				if err == nil {
					var info os.FileInfo
					info, err = f.Stat()
					if err == nil {
						_, err = client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(c.Bucket), Key: aws.String(prefix + "/" + name), Body: f})
						mu.Lock()
						total += info.Size()
						mu.Unlock()
					}
					f.Close()
				}
				if err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
				}
			}
		}()
	}
	for _, e := range entries {
		jobs <- e.Name()
	}
	close(jobs)
	wg.Wait()
	if first != nil {
		return result{}, first
	}
	return result{Files: len(entries), Bytes: total, Seconds: time.Since(start).Seconds(), PeakRSS: peakRSS(os.Getpid())}, nil
}

// peakRSS reads a process's high-water mark of resident memory (VmHWM).
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

type dropResult struct {
	result
	p50, p99, max time.Duration
}

// runDrop starts `dab watch` and `dab work`, puts n files into the drop
// folder (moved in by rename, or copied in by writing them there), and
// measures throughput and the latency from each file's arrival to its record.
func runDrop(dabBin string, env []string, records *asset.Store, work, mode string, n, size int, settle time.Duration, wantRecords int, every time.Duration) (dropResult, error) {
	drop := filepath.Join(work, "drop")
	port, err := localsvc.FreePort()
	if err != nil {
		return dropResult{}, err
	}
	env = append(env, "DAB_DROP_DIR="+drop, "DAB_SETTLE="+settle.String(), "DAB_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(port))
	exited := make(chan error, 2)
	for _, role := range []string{"work", "watch"} {
		cmd := exec.Command(dabBin, role)
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = io.Discard, &stderr
		if err := cmd.Start(); err != nil {
			return dropResult{}, err
		}
		waited := make(chan struct{})
		go func() {
			err := cmd.Wait()
			close(waited)
			exited <- fmt.Errorf("dab %s exited early (%v): %s", role, err, lastLine(stderr.String()))
		}()
		defer func() {
			cmd.Process.Signal(os.Interrupt)
			<-waited
		}()
	}
	name := fmt.Sprintf("%s-%d", mode, n)
	staging := filepath.Join(work, "staging-"+name)
	if err := makeFiles(staging, n, size); err != nil {
		return dropResult{}, err
	}
	target := filepath.Join(drop, "generic", "bench-"+name)
	if err := os.MkdirAll(target, 0o750); err != nil {
		return dropResult{}, err
	}
	time.Sleep(time.Second) // the watcher's start-up scan
	arrived := make(map[string]time.Time, n)
	entries, _ := os.ReadDir(staging)
	start := time.Now()
	for _, e := range entries {
		src, dst := filepath.Join(staging, e.Name()), filepath.Join(target, e.Name())
		if mode == "moved" {
			if err := os.Rename(src, dst); err != nil {
				return dropResult{}, err
			}
		} else {
			b, err := os.ReadFile(src)
			if err == nil {
				err = os.WriteFile(dst, b, 0o640)
			}
			if err != nil {
				return dropResult{}, err
			}
		}
		arrived["generic/bench-"+name+"/"+e.Name()] = time.Now()
		time.Sleep(every)
	}
	for {
		c, err := records.Count(context.Background(), "")
		if err != nil {
			return dropResult{}, err
		}
		if int(c) >= wantRecords+n {
			break
		}
		select {
		case err := <-exited:
			return dropResult{}, err
		default:
		}
		if time.Since(start) > 10*time.Minute {
			return dropResult{}, fmt.Errorf("only %d of %d records after 10 minutes", int(c)-wantRecords, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var lat []time.Duration
	var last time.Time
	cursor := ""
	for {
		page, err := records.List(context.Background(), asset.ListOptions{Type: "generic", Limit: 1000, Cursor: cursor})
		if err != nil {
			return dropResult{}, err
		}
		for _, r := range page.Records {
			if t, ok := arrived[r.S3Key]; ok {
				lat = append(lat, r.CreatedAt.Sub(t))
				if r.CreatedAt.After(last) {
					last = r.CreatedAt
				}
			}
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		return dropResult{}, fmt.Errorf("no records of the dropped files")
	}
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return dropResult{
		result: result{Files: len(lat), Bytes: int64(len(lat) * size), Seconds: last.Sub(start).Seconds()},
		p50:    pct(0.50), p99: pct(0.99), max: lat[len(lat)-1],
	}, nil
}

// runHTTPUpload starts `dab watch` (its HTTP API) and PUTs one file through
// it, reporting the rate into the spool and the server's peak RSS.
func runHTTPUpload(dabBin string, env []string, work, file string) (result, error) {
	const token = "bench-admin-token-0123456789"
	ln, err := localsvc.FreePort()
	if err != nil {
		return result{}, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ln)
	cmd := exec.Command(dabBin, "watch")
	cmd.Env = append(env, "DAB_HTTP_ADDR="+addr, "DAB_ADMIN_TOKEN="+token, "DAB_DROP_DIR="+filepath.Join(work, "drop-http"))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 200 {
			return result{}, fmt.Errorf("dab watch did not answer on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	f, err := os.Open(file)
	if err != nil {
		return result{}, err
	}
	defer f.Close()
	st, _ := f.Stat()
	req, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/v1/assets/generic/http/"+filepath.Base(file), f)
	req.ContentLength = st.Size()
	req.Header.Set("Authorization", "Bearer "+token)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return result{}, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return result{}, fmt.Errorf("PUT answered %s", resp.Status)
	}
	return result{Files: 1, Bytes: st.Size(), Seconds: time.Since(start).Seconds(), PeakRSS: peakRSS(cmd.Process.Pid)}, nil
}

// ceilingLua does the Redis work of a successful purchase (reads, two
// balance moves, owner, stream entry, two history pushes, result) on keys
// redis-benchmark varies: the most a purchase script can do on this Redis.
const ceilingLua = `
redis.call('HGET', KEYS[1], 'status')
redis.call('EXISTS', KEYS[2])
redis.call('HGET', KEYS[2], 'owner')
redis.call('HGET', KEYS[2], 'price')
redis.call('HGET', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[1], -1)
redis.call('HINCRBY', KEYS[3], 'seller', 1)
redis.call('HSET', KEYS[2], 'owner', ARGV[1])
local e = redis.call('XADD', KEYS[4], '*', 'kind', 'purchase', 'amount', '1', 'purchase_id', ARGV[1])
redis.call('LPUSH', KEYS[5], e)
redis.call('LPUSH', KEYS[6], e)
redis.call('HSET', KEYS[1], 'status', 'succeeded', 'entry_id', e)
redis.call('SADD', KEYS[7], ARGV[1])
return e`

// runPurchases measures purchases per second through the ledger script
// directly and end to end (enqueue -> `dab work` -> ledger), next to
// redis-benchmark running a script of the same Redis work as the ceiling.
func runPurchases(dabBin string, env []string, rdb *redis.Client, r *localsvc.Redis) error {
	ctx := context.Background()
	const n, conc = 5000, 16
	assets := asset.NewStore(rdb, "bench:")
	led := ledger.New(rdb, "bench:", "house")
	ids := make([]string, 2*n)
	for i := range ids {
		rec, _, err := assets.Put(ctx, asset.Record{Name: "p", Type: "generic", Path: fmt.Sprint(i), S3Bucket: "b", S3Key: fmt.Sprintf("generic/p%d", i), SHA256: "s"})
		if err != nil {
			return err
		}
		ids[i] = rec.ID
	}
	for b := range conc {
		if _, err := led.Grant(ctx, fmt.Sprintf("bench-%d", b), fmt.Sprintf("buyer%d", b), 1<<40); err != nil {
			return err
		}
	}
	parallel := func(count int, do func(i int) error) (float64, error) {
		var wg sync.WaitGroup
		errs := make(chan error, conc)
		start := time.Now()
		for w := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < count; i += conc {
					if err := do(i); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		select {
		case err := <-errs:
			return 0, err
		default:
		}
		return float64(count) / time.Since(start).Seconds(), nil
	}
	direct, err := parallel(n, func(i int) error {
		_, err := led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: fmt.Sprintf("d%d", i), AssetID: ids[i], BuyerID: fmt.Sprintf("buyer%d", i%conc), Credits: 1})
		return err
	})
	if err != nil {
		return err
	}

	// End to end: record as pending, enqueue, a worker applies it.
	worker := exec.Command(dabBin, "work")
	worker.Env = append(env, "DAB_KEY_PREFIX=bench:", "DAB_CONCURRENCY=16")
	worker.Stdout, worker.Stderr = io.Discard, io.Discard
	if err := worker.Start(); err != nil {
		return err
	}
	defer func() {
		worker.Process.Signal(os.Interrupt)
		worker.Wait()
	}()
	client := asynq.NewClientFromRedisClient(rdb)
	start := time.Now()
	if _, err := parallel(n, func(i int) error {
		p := ledger.PurchaseRequest{PurchaseID: fmt.Sprintf("e%d", i), AssetID: ids[n+i], BuyerID: fmt.Sprintf("buyer%d", i%conc), Credits: 1}
		if _, _, err := led.Accept(ctx, p); err != nil {
			return err
		}
		t, err := task.NewPurchase(task.PurchasePayload{PurchaseID: p.PurchaseID, AssetID: p.AssetID, BuyerID: p.BuyerID, Credits: p.Credits})
		if err == nil {
			_, err = client.EnqueueContext(ctx, t)
		}
		return err
	}); err != nil {
		return err
	}
	for {
		done, err := rdb.SCard(ctx, led.Keys().Purchases()).Result()
		if err != nil {
			return err
		}
		if done >= 2*n {
			break
		}
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("only %d of %d purchases applied after 5 minutes", done-n, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	endToEnd := float64(n) / time.Since(start).Seconds()

	// The ceiling: redis-benchmark running EVALSHA of the same Redis work.
	ceiling := 0.0
	port := strings.TrimPrefix(r.Addr(), "127.0.0.1:")
	sha, err := exec.Command("redis-cli", "-p", port, "SCRIPT", "LOAD", ceilingLua).Output()
	if err == nil {
		out, berr := exec.Command("redis-benchmark", "-p", port, "-n", "50000", "-c", strconv.Itoa(conc), "-r", "100000000", "-q",
			"EVALSHA", strings.TrimSpace(string(sha)), "7", "c:p:__rand_int__", "c:a:__rand_int__", "c:bal", "c:ent", "c:h:__rand_int__", "c:h:s", "c:set", "b__rand_int__").Output()
		if berr == nil {
			f := strings.Fields(lastLine(strings.ReplaceAll(string(out), "\r", "\n")))
			for i, w := range f {
				if w == "requests" && i > 0 {
					ceiling, _ = strconv.ParseFloat(f[i-1], 64)
				}
			}
		}
	}
	fmt.Printf("purchases (%d each, %d-way)\n", n, conc)
	fmt.Printf("  ledger script directly        %9.0f /s\n", direct)
	fmt.Printf("  end to end (enqueue, worker)  %9.0f /s\n", endToEnd)
	if ceiling > 0 {
		fmt.Printf("  redis-benchmark EVALSHA       %9.0f /s  (the same Redis work; direct/ceiling %.2f, end-to-end/ceiling %.2f)\n\n", ceiling, direct/ceiling, endToEnd/ceiling)
	} else {
		fmt.Printf("  redis-benchmark not available: no ceiling measured\n\n")
	}
	return nil
}
