package main

// The upload runs: dab's pipeline, the plain SDK baseline, and dab's HTTP API.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	tm "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/internal/storage"
)

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
