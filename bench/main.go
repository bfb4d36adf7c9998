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
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/internal/storage"
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
		AccessKeyID: "bench", SecretAccessKey: "bench-secret-key", ChecksumMode: storage.ChecksumSHA256}
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
