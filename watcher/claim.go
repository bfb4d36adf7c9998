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

// claim takes one complete file into the spool and enqueues its upload.
func (w *Watcher) claim(ctx context.Context, job claimJob) {
	log := w.log.With("path", job.path)
	done := func() {
		w.mu.Lock()
		delete(w.pending, job.path)
		w.mu.Unlock()
	}
	retryLater := func(after time.Duration) {
		w.mu.Lock()
		if c, ok := w.pending[job.path]; ok {
			c.inflight, c.looks, c.notBefore = false, 0, time.Now().Add(after)
		}
		w.mu.Unlock()
	}
	if _, err := naming.Key(job.c.typ, job.c.rel); err != nil {
		w.failBadName(job, err)
		done()
		return
	}
	if w.queueIsDown(time.Now()) {
		retryLater(0) // the file stays where it is until the queue answers
		return
	}
	m, err := w.spool.Claim(job.path, spool.Input{Type: job.c.typ, Path: job.c.rel, Source: "watcher"},
		spool.FileState{Size: job.c.size, ModTime: job.c.mtime})
	switch {
	case errors.Is(err, spool.ErrGone):
		done() // another watcher took it, or it was deleted
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
		retryLater(w.cfg.Settle)
		return
	case errors.Is(err, spool.ErrChanging):
		log.Info("watcher.still_changing")
		retryLater(w.cfg.Settle)
		return
	case err != nil:
		log.Error("watcher.claim_failed", "error", err.Error())
		retryLater(5 * time.Second)
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
		retryLater(0)
		return
	}
	done()
}

// failBadName moves a file whose name cannot become an S3 key to the failed
// folder with the reason beside it.
func (w *Watcher) failBadName(job claimJob, cause error) {
	note := spool.FailureNote{Type: job.c.typ, Path: job.c.rel, Size: job.c.size, Source: "watcher",
		Failure: spool.Failure{Code: "InvalidName", Message: cause.Error() + ": rename the file"}}
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
