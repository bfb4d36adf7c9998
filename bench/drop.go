package main

// The drop-folder runs: throughput and drop-to-record latency.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/localsvc"
)

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
