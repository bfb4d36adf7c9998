// Enqueueing uploads. Task IDs are deterministic, so enqueueing twice is
// harmless; while Redis does not answer, a back-off stops new claims (the
// files stay in the drop folder) and entries that could not be returned are
// retried; at start, entries a crash left without a task are enqueued.

package watcher

import (
	"context"
	"time"

	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/worker/task"
)

// Enqueuer is the part of *asynq.Client the watcher uses.
type Enqueuer = task.Enqueuer

// enqueue queues a spool entry's upload. On failure it starts the back-off
// during which no new files are claimed, and returns the error.
func (w *Watcher) enqueue(ctx context.Context, m *spool.Manifest) error {
	queued, err := task.EnqueueUpload(ctx, w.queue, m, w.cfg.Queue)
	if err == nil {
		w.queueUp()
		if queued { // an existing task (recovery at start) was counted when it was queued
			w.enqueued.Add(1)
			w.log.Info("watcher.queued", "task_id", task.UploadTaskID(m.ID), "spool_id", m.ID, "key", m.Key(), "bytes", m.Size)
		}
		return nil
	}
	w.enqueueErrors.Add(1)
	w.mu.Lock()
	if w.queueDelay == 0 {
		w.queueDelay = 500 * time.Millisecond
	} else {
		w.queueDelay = min(2*w.queueDelay, 30*time.Second)
	}
	w.queueDown = time.Now().Add(w.queueDelay)
	delay := w.queueDelay
	w.mu.Unlock()
	w.log.Error("watcher.enqueue_failed", "spool_id", m.ID, "key", m.Key(), "error", err.Error(),
		"retry_in", delay.String(), "note", "nothing is lost: files stay in the drop folder (or the spool) until the queue answers")
	return err
}

// keepUnqueued remembers a spool entry whose enqueue must be retried.
func (w *Watcher) keepUnqueued(m *spool.Manifest) {
	w.mu.Lock()
	w.unqueued[m.ID] = m
	w.mu.Unlock()
}

func (w *Watcher) queueUp() {
	w.mu.Lock()
	w.queueDelay, w.queueDown = 0, time.Time{}
	w.mu.Unlock()
}

func (w *Watcher) queueIsDown(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return now.Before(w.queueDown)
}

// retryUnqueued tries again to enqueue entries whose enqueue failed.
func (w *Watcher) retryUnqueued(ctx context.Context) {
	w.mu.Lock()
	if len(w.unqueued) == 0 || time.Now().Before(w.queueDown) {
		w.mu.Unlock()
		return
	}
	batch := make([]*spool.Manifest, 0, len(w.unqueued))
	for id, m := range w.unqueued {
		batch = append(batch, m)
		delete(w.unqueued, id)
	}
	w.mu.Unlock()
	for _, m := range batch {
		if err := w.enqueue(ctx, m); err != nil {
			w.keepUnqueued(m)
		}
	}
}

// recover runs at start: claims a crash cut short are finished or undone,
// and spool entries without a task (a crash between claim and enqueue) are
// enqueued. Entries whose task exists are not duplicated: the task ID is
// deterministic.
func (w *Watcher) recover(ctx context.Context) {
	for _, r := range w.spool.Recover() {
		if r.Err != nil {
			w.log.Error("watcher.recover_failed", "spool_id", r.ID, "error", r.Err.Error())
			continue
		}
		if r.Action != spool.RecoverRemoved {
			w.log.Info("watcher.recovered", "spool_id", r.ID, "action", r.Action, "path", r.Path)
		}
	}
	// Entries List could read are queued even when others could not be.
	entries, err := w.spool.List()
	if err != nil {
		w.log.Error("watcher.recover_failed", "error", err.Error())
	}
	for _, m := range entries {
		if _, ok, _ := w.spool.FailureMark(m.ID); ok {
			continue // archived for good; an operator re-runs it
		}
		if err := w.enqueue(ctx, m); err != nil {
			w.keepUnqueued(m)
		}
	}
}

// OrphanAgeMin is how old a spool entry must be before RequeueOrphans
// takes it: a younger one is still being queued by whoever spooled it (the
// HTTP intake commits, then queues; a replayed Idempotency-Key removes its
// entry again).
const OrphanAgeMin = 10 * time.Second

// TaskLookup tells which of many tasks exist (task.Lookup).
type TaskLookup interface {
	Missing(ctx context.Context, queue string, taskIDs []string) ([]string, error)
}

// RequeueOrphans queues the upload of every spool entry whose task is gone
// from Redis (a Redis restored from an older backup, a failover to a replica
// that had not synced, a FLUSHALL) and returns how many it queued. Task IDs
// come from spool IDs, so an entry whose task exists is not queued twice;
// entries marked failed wait for an operator. It costs a folder listing and
// one pipelined Redis round trip per thousand entries; manifests are read
// only for the orphans.
func RequeueOrphans(ctx context.Context, sp *spool.Spool, q Enqueuer, tasks TaskLookup, queue string, now time.Time) (int, error) {
	ids, err := sp.IDs()
	if err != nil {
		return 0, err
	}
	var old []string
	spoolIDs := map[string]string{} // by task ID
	for _, id := range ids {
		if now.Sub(spool.IDTime(id)) >= OrphanAgeMin {
			t := task.UploadTaskID(id)
			old = append(old, t)
			spoolIDs[t] = id
		}
	}
	if len(old) == 0 {
		return 0, nil
	}
	missing, err := tasks.Missing(ctx, queue, old)
	if err != nil {
		return 0, err // Redis is down: the next round tries again
	}
	n := 0
	for _, taskID := range missing {
		id := spoolIDs[taskID]
		if _, failed, _ := sp.FailureMark(id); failed {
			continue
		}
		m, err := sp.Get(id)
		if err != nil {
			continue // removed since the listing (uploaded), or damaged: Recover reports it
		}
		queued, err := task.EnqueueUpload(ctx, q, m, queue)
		if err != nil {
			return n, err
		}
		if queued {
			n++
		}
	}
	return n, nil
}
