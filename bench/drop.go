package main

// P4 and P5: the drop folder under a steady trickle (latency) and with a
// large backlog at start (cost per file, memory, exactness).

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/worker/task"
)

// p4Steady is P4: files moved into the drop folder one at a time at a steady
// rate, and the latency from each move to its record.
func (b *bench) p4Steady(ctx context.Context, t *table) error {
	o := b.opt
	r, err := b.newRun("p4")
	if err != nil {
		return err
	}
	defer r.stopAll(nil)
	n := int(o.steady.Seconds() * float64(o.rate))
	staging := filepath.Join(r.dir, "staging")
	names, err := makeFiles(staging, n, o.fileSize, "p4")
	if err != nil {
		return err
	}
	if _, err := r.start(ctx, "work"); err != nil {
		return err
	}
	if _, err := r.start(ctx, "watch"); err != nil {
		return err
	}
	p := startPoller(b.rdb, r.prefix)
	defer p.stop()
	every := time.Second / time.Duration(o.rate)
	start := time.Now()
	for i, name := range names {
		// Each move has its own slot, so a slow one does not shift the rest.
		time.Sleep(time.Until(start.Add(time.Duration(i) * every)))
		if err := os.Rename(filepath.Join(staging, name), filepath.Join(r.target(), name)); err != nil {
			return err
		}
		p.expect(r.key(name), time.Now())
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if err := p.wait(ctx, o.timeout, r.servers); err != nil {
		return err
	}
	var lat []time.Duration
	for _, e := range p.results() {
		lat = append(lat, e.recorded.Sub(e.arrived))
	}
	slices.Sort(lat)
	pct := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	rss := r.stopAll(t)
	target := o.settle + 250*time.Millisecond
	t.add(row{
		work:  fmt.Sprintf("P4  %d files/s moved in one at a time for %s (%s x %s)", o.rate, o.steady, count(n), size(int64(o.fileSize))),
		dab:   fmt.Sprintf("latency p50 %s, p99 %s, max %s", millis(pct(0.50)), millis(pct(0.99)), millis(lat[len(lat)-1])),
		s5cmd: fmt.Sprintf("target: settle + 250 ms = %s", millis(target)),
		ratio: fmt.Sprintf("p99 %.2f of target", pct(0.99).Seconds()/target.Seconds()),
		rss:   rss,
	})
	return nil
}

// errCheck marks a P5 run that finished but whose check failed: the table is
// still printed, and the bench exits with an error.
var errCheck = errors.New("P5 check failed")

// backlogMarks are the record counts P5 reports the time to.
var backlogMarks = []int{1000, 10000}

// p5Backlog is P5: files already waiting in the drop folder when `dab watch`
// starts. It reports the time to the first 1k, 10k and all records, checks
// that every file became exactly one record and none failed, and compares
// its files/s with P1a's (p1aRate).
func (b *bench) p5Backlog(ctx context.Context, t *table, p1aRate float64) error {
	o := b.opt
	r, err := b.newRun("p5")
	if err != nil {
		return err
	}
	defer r.stopAll(nil)
	names, err := makeFiles(r.target(), o.backlog, o.backlogSize, "p5")
	if err != nil {
		return err
	}
	// The worker is up first: its start-up is not the backlog's cost.
	if _, err := r.start(ctx, "work"); err != nil {
		return err
	}
	p := startPoller(b.rdb, r.prefix)
	defer p.stop()
	start := time.Now()
	for _, name := range names {
		p.expect(r.key(name), start)
	}
	if _, err := r.start(ctx, "watch"); err != nil {
		return err
	}
	if err := p.wait(ctx, o.timeout, r.servers); err != nil {
		return err
	}
	rss := r.stopAll(t)
	problems := b.checkBacklog(ctx, r)

	var s5 copied
	if o.backlogS5cmd {
		dir := filepath.Join(r.dir, "s5cmd")
		if _, err := makeFiles(dir, o.backlog, o.backlogSize, "p5"); err != nil {
			return err
		}
		if s5, err = b.s5cmdCopy(ctx, dir+"/*", "s5cmd/"+r.name, o.backlog); err != nil {
			return err
		}
	}
	marks := append(slices.DeleteFunc(slices.Clone(backlogMarks), func(m int) bool { return m >= o.backlog }), o.backlog)
	prevMark, prevTook := 0, 0.0
	for i, m := range marks {
		took := p.reached(m).Sub(start).Seconds()
		rate := float64(m) / took
		label := "    "
		if i == 0 {
			label = fmt.Sprintf("P5  %s x %s waiting when watch starts: ", count(o.backlog), size(int64(o.backlogSize)))
		}
		rw := row{
			work:  fmt.Sprintf("%sfirst %s records", label, count(m)),
			dab:   fmt.Sprintf("%s (%s)", seconds(took), perSec(float64(m), took, "files")),
			ratio: "P1a not run",
		}
		if p1aRate > 0 {
			rw.ratio = fmt.Sprintf("files/s %.2f of P1a's", rate/p1aRate)
		}
		if i > 0 {
			// The rate since the last mark shows the cost per file apart
			// from the start (settle time, first scan).
			rw.dab = fmt.Sprintf("%s (%s; %s after %s)", seconds(took), perSec(float64(m), took, "files"),
				perSec(float64(m-prevMark), took-prevTook, "files"), count(prevMark))
		}
		prevMark, prevTook = m, took
		if m == o.backlog {
			rw.work = fmt.Sprintf("%sall %s records", label, count(m))
			rw.rss = rss
			if o.backlogS5cmd {
				rw.s5cmd = fmt.Sprintf("%s (%s)", seconds(s5.seconds), perSec(float64(m), s5.seconds, "files"))
				rw.ratio = fmt.Sprintf("%.2f; %s", took/s5.seconds, rw.ratio)
				rw.rss += "; s5cmd " + mib(s5.rss)
			} else {
				rw.s5cmd = "skipped (-backlog-s5cmd=false)"
			}
		}
		t.add(rw)
	}
	if len(problems) > 0 {
		t.note("P5 check FAILED: %s", strings.Join(problems, "; "))
		return errCheck
	}
	t.note("P5 check passed: exactly %s records, %s upload tasks completed (no file taken twice), none failed, drop folder empty",
		count(o.backlog), count(o.backlog))
	return nil
}

// checkBacklog returns what is wrong after P5: every file must have become
// exactly one record through exactly one upload task, and none may have
// failed or been left behind.
func (b *bench) checkBacklog(ctx context.Context, r *runEnv) []string {
	want := b.opt.backlog
	var problems []string
	if n, err := asset.NewStore(b.rdb, r.prefix).Count(ctx, ""); err != nil {
		problems = append(problems, err.Error())
	} else if int(n) != want {
		problems = append(problems, fmt.Sprintf("%s records, want %s", count(int(n)), count(want)))
	}
	// A file claimed twice would make two spool entries and so two tasks.
	q, err := asynq.NewInspectorFromRedisClient(b.rdb).GetQueueInfo(task.UploadQueue(r.hostID))
	if err != nil {
		problems = append(problems, "upload queue: "+err.Error())
	} else if q.Completed != want || q.Archived != 0 || q.Retry != 0 {
		problems = append(problems, fmt.Sprintf("upload tasks: %d completed, %d archived, %d retrying; want %d completed", q.Completed, q.Archived, q.Retry, want))
	}
	for _, dir := range []struct{ what, path string }{{"failed folder", r.failedDir()}, {"drop folder", r.target()}} {
		if n, err := countFiles(dir.path); err != nil {
			problems = append(problems, err.Error())
		} else if n > 0 {
			problems = append(problems, fmt.Sprintf("%d files in the %s", n, dir.what))
		}
	}
	return problems
}

// countFiles counts the files below dir (none if it does not exist).
func countFiles(dir string) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	return n, err
}
