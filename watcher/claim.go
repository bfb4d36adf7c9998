// Claiming a complete file: a name that cannot become an S3 key sends the
// file to the failed folder with a note; otherwise spool.Claim takes it by an
// atomic rename and its upload is enqueued. A claim that cannot go through
// (the file is open, changing, or the queue is down) leaves or puts the file
// back where it was, to be looked at again.

package watcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/spool"
)

type claimJob struct {
	path string
	c    candidate
}

// claimBatchMax is the most files one claimer takes at once: one group
// commit (spool.ClaimBatch) for all of them.
const claimBatchMax = 64

// StopGraceDefault bounds how long a claim batch under way may go on
// enqueueing after the watcher was told to stop (a queue that does not
// answer then gets its files back, as at any time).
const StopGraceDefault = 10 * time.Second

// claimBatch takes complete files into the spool, with one group commit for
// all of them, and enqueues their uploads.
//
// Once ctx ends (the watcher stops) a batch not begun is left alone (its
// files stay in the drop folder, untouched), and one begun is finished:
// its enqueues outlive ctx by up to Config.StopGrace, so that a stop
// queues what was claimed instead of putting it all back with an error
// each.
func (w *Watcher) claimBatch(ctx context.Context, jobs []claimJob) {
	if ctx.Err() != nil {
		return
	}
	// The grace starts at the stop, not now: a batch of large files may
	// hash for longer than the grace.
	graced, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(w.cfg.StopGrace, cancel) })
	defer stop()
	ctx = graced
	var ready []claimJob
	var reqs []spool.ClaimRequest
	for _, job := range jobs {
		if w.queueIsDown(time.Now()) {
			w.retryLater(job, 0) // the file stays where it is until the queue answers
			continue
		}
		ready = append(ready, job)
		reqs = append(reqs, spool.ClaimRequest{Src: job.path, In: spool.Input{Type: job.c.typ, Path: job.c.rel, Source: "watcher"},
			Seen: spool.FileState{Size: job.c.size, ModTime: job.c.mtime}})
	}
	if len(reqs) == 0 {
		return
	}
	for i, r := range w.spool.ClaimBatch(reqs) {
		w.afterClaim(ctx, ready[i], r.M, r.Err)
	}
}

// done forgets a file that was taken (or is gone).
func (w *Watcher) done(job claimJob) {
	w.mu.Lock()
	delete(w.pending, job.path)
	w.mu.Unlock()
}

// retryLater looks at a file again after a while.
func (w *Watcher) retryLater(job claimJob, after time.Duration) {
	w.mu.Lock()
	if c, ok := w.pending[job.path]; ok {
		c.inflight, c.looks, c.notBefore = false, 0, time.Now().Add(after)
	}
	w.mu.Unlock()
}

// afterClaim handles the outcome of one claim: the entry's upload is queued,
// or the file waits to be looked at again.
func (w *Watcher) afterClaim(ctx context.Context, job claimJob, m *spool.Manifest, err error) {
	log := w.log.With("path", job.path)
	switch {
	case errors.Is(err, spool.ErrGone):
		w.done(job) // another watcher took it, or it was deleted
		return
	case errors.Is(err, spool.ErrInUse):
		// A writer pausing for longer than the settle time: the file is
		// taken once it is closed. Said once, not on every look.
		w.mu.Lock()
		c, ok := w.pending[job.path]
		first := ok && !c.inUse
		if ok {
			c.inUse = true
		}
		w.mu.Unlock()
		if first {
			log.Info("watcher.still_open", "note", "a process has the file open for writing: it is taken once closed")
		}
		w.retryLater(job, w.cfg.Settle)
		return
	case errors.Is(err, naming.ErrInvalid):
		// The spool checks every name (the same rules for every intake):
		// this one cannot become an S3 key.
		w.failBadName(job, err)
		w.done(job)
		return
	case errors.Is(err, spool.ErrChanging):
		log.Info("watcher.still_changing")
		w.retryLater(job, w.cfg.Settle)
		return
	case err != nil:
		log.Error("watcher.claim_failed", "error", err.Error())
		w.retryLater(job, 5*time.Second)
		return
	}
	w.claimed.Add(1)
	// watcher.queued follows (one Info line per file); this one is for
	// following a claim step by step.
	log.Debug("watcher.claimed", "spool_id", m.ID, "key", m.Key(), "bytes", m.Size)
	if err := w.enqueue(ctx, m); err != nil {
		// The queue is down: the file goes back where it was, and is taken
		// again once the queue answers. If its name was taken meanwhile it
		// waits in the spool and its enqueue is retried.
		if rerr := w.spool.Unclaim(m.ID, job.path); rerr != nil {
			w.keepUnqueued(m)
			log.Warn("watcher.kept_in_spool", "spool_id", m.ID, "reason", rerr.Error())
		} else {
			log.Info("watcher.returned", "spool_id", m.ID, "reason", "the queue did not answer")
		}
		w.retryLater(job, 0)
		return
	}
	w.done(job)
}

// failBadName moves a file whose name cannot become an S3 key to the failed
// folder with the reason beside it.
func (w *Watcher) failBadName(job claimJob, cause error) {
	note := spool.FailureNote{Type: job.c.typ, Path: job.c.rel, Size: job.c.size, Source: "watcher",
		Failure: spool.Failure{Code: "InvalidName", Message: cause.Error()}} // the naming error says what to change
	where, err := spool.RejectFile(job.path, w.cfg.FailedDir, note)
	if where == "" {
		// Not moved; a file that is gone already needs no report.
		if !errors.Is(err, fs.ErrNotExist) {
			w.report(job.path, "bad-name", fmt.Sprintf("%v; moving it to the failed folder failed too: %v", cause, err))
		}
		return
	}
	w.failed.Add(1)
	if err != nil {
		w.log.Error("watcher.failure_note", "path", where, "error", err.Error())
	}
	w.log.Warn("watcher.rejected", "path", job.path, "moved_to", where, "reason", cause.Error())
}
