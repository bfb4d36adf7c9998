// Package watcher takes files from a drop folder into dab's pipeline. A file
// is taken only once it is complete (unchanged for the settle time and, on
// Linux, open for writing in no process: see spool.Claim), is claimed by an
// atomic rename into the spool (so two watchers or a rescan racing an event
// cannot take it twice), and its upload task is enqueued with a deterministic
// ID. Events can be lost (inotify overflow, network filesystems, files present
// before start), so the whole tree is also rescanned at start, on overflow and
// periodically.
//
// Layout: drop/<type>/<path> for each registered type; files directly in
// drop/ are of type generic. The watcher imports only the worker's public task
// contract, never its handlers.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/worker/task"
)

// DefaultType is the type of files directly in the drop folder.
const DefaultType = "generic"

// Config tunes a Watcher.
type Config struct {
	// DropDir is the folder to watch (required).
	DropDir string
	// FailedDir receives files with names that cannot be uploaded, each with
	// <name>.error.json beside it (required).
	FailedDir string
	// Types are the registered asset types; each gets a folder (required).
	Types []string
	// Settle is how long a file must stay unchanged before it is taken.
	Settle time.Duration
	// RescanInterval is the period of full rescans (default 30s).
	RescanInterval time.Duration
	// Poll disables file events: rescans alone find files.
	Poll bool
	// Claimers is the number of files claimed at once (default 4).
	Claimers int
	// Logger receives the watcher's events; default slog.Default().
	Logger *slog.Logger
	// Queue receives the upload tasks (task.UploadQueue of this host);
	// default task.QueueUploads.
	Queue string
}

// Enqueuer is the part of *asynq.Client the watcher uses.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Problem is a condition in the drop folder that needs a person: a folder of
// an unknown type, a symlink, a device. Each is logged once, not on every
// rescan, and listed by Problems.
type Problem struct {
	Path    string    `json:"path"`
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
	Since   time.Time `json:"since"`
}

// Stats are counters for metrics.
type Stats struct {
	Detected, Claimed, Enqueued, Failed, Rescans, Overflows, EnqueueErrors int64
}

// candidate is a file seen in the drop folder that is not taken yet.
type candidate struct {
	typ, rel   string // asset type and path below the type folder
	size       int64
	mtime      time.Time
	lastChange time.Time
	looks      int
	renamedIn  bool
	notBefore  time.Time // back-off after a failed claim
	inflight   bool
	inUse      bool // a claim found it open for writing (logged once)
}

// Watcher watches one drop folder.
type Watcher struct {
	cfg   Config
	root  string
	types map[string]bool
	spool *spool.Spool
	queue Enqueuer
	log   *slog.Logger

	mu         sync.Mutex
	pending    map[string]*candidate // by absolute path
	problems   map[string]Problem    // by path
	watched    map[string]bool       // folders with an fsnotify watch
	unqueued   map[string]*spool.Manifest
	queueDown  time.Time // enqueues fail until at least this time
	queueDelay time.Duration

	rescanNow chan struct{}
	claims    chan claimJob
	// addWatch adds an fsnotify watch; nil when polling.
	addWatch func(string) error

	detected, claimed, enqueued, failed, rescans, overflows, enqueueErrors atomic.Int64
}

type claimJob struct {
	path string
	c    candidate
}

// New checks the configuration and builds a Watcher; Run starts it.
func New(cfg Config, sp *spool.Spool, queue Enqueuer) (*Watcher, error) {
	if cfg.DropDir == "" || cfg.FailedDir == "" || len(cfg.Types) == 0 {
		return nil, errors.New("watcher: DropDir, FailedDir and Types are required")
	}
	root, err := filepath.Abs(cfg.DropDir)
	if err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	for name, dir := range map[string]string{"DAB_DATA_DIR (spool)": sp.Dir(), "DAB_FAILED_DIR": cfg.FailedDir} {
		if inside(root, dir) {
			return nil, fmt.Errorf("watcher: %s %s is inside the drop folder %s: the watcher would take its own files; put it elsewhere", name, dir, root)
		}
	}
	if cfg.RescanInterval <= 0 {
		cfg.RescanInterval = 30 * time.Second
	}
	if cfg.Claimers <= 0 {
		cfg.Claimers = 4
	}
	if cfg.Queue == "" {
		cfg.Queue = task.QueueUploads
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Watcher{
		cfg: cfg, root: root, types: map[string]bool{}, spool: sp, queue: queue, log: cfg.Logger,
		pending: map[string]*candidate{}, problems: map[string]Problem{}, watched: map[string]bool{},
		unqueued: map[string]*spool.Manifest{}, rescanNow: make(chan struct{}, 1), claims: make(chan claimJob),
	}
	for _, t := range cfg.Types {
		if err := naming.ValidateType(t); err != nil {
			return nil, fmt.Errorf("watcher: %w", err)
		}
		w.types[t] = true
	}
	if !w.types[DefaultType] {
		return nil, fmt.Errorf("watcher: type %q must be registered: files directly in the drop folder have it", DefaultType)
	}
	return w, nil
}

// inside reports whether dir is root or below it.
func inside(root, dir string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	rel, err := filepath.Rel(root, abs)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// Run watches until ctx ends. It first creates the type folders, finishes
// what a crash left in the spool and enqueues entries whose task is missing.
func (w *Watcher) Run(ctx context.Context) error {
	for t := range w.types {
		if err := os.MkdirAll(filepath.Join(w.root, t), 0o750); err != nil {
			return fmt.Errorf("watcher: create type folder: %w", err)
		}
	}
	w.recover(ctx)

	var events <-chan fsnotify.Event
	var errs <-chan error
	if !w.cfg.Poll {
		fw, err := fsnotify.NewBufferedWatcher(8192)
		if err != nil {
			return fmt.Errorf("watcher: start file events (use DAB_POLL=true where they are not available): %w", err)
		}
		defer fw.Close()
		w.addWatch = fw.Add
		events, errs = fw.Events, fw.Errors
	}

	var claimers sync.WaitGroup
	for range w.cfg.Claimers {
		claimers.Add(1)
		go func() {
			defer claimers.Done()
			for job := range w.claims {
				w.claim(ctx, job)
			}
		}()
	}
	defer func() {
		close(w.claims)
		claimers.Wait()
	}()

	w.rescan()
	w.log.Info("watcher.started", "drop_dir", w.root, "types", w.cfg.Types, "poll", w.cfg.Poll,
		"settle", w.cfg.Settle.String(), "rescan_interval", w.cfg.RescanInterval.String())
	rescan := time.NewTicker(w.cfg.RescanInterval)
	defer rescan.Stop()
	check := time.NewTicker(w.checkInterval())
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			w.log.Info("watcher.stopped")
			return nil
		case ev := <-events:
			w.handleEvent(ev)
		case err := <-errs:
			w.handleError(err)
		case <-w.rescanNow:
			w.rescan()
		case <-rescan.C:
			w.rescan()
		case <-check.C:
			w.retryUnqueued(ctx)
			for _, job := range w.ready(time.Now()) {
				select {
				case w.claims <- job:
				case <-ctx.Done():
					return nil
				}
			}
		}
	}
}

// checkInterval is how often pending files are looked at: often enough that
// a settled file is taken soon after its settle time.
func (w *Watcher) checkInterval() time.Duration {
	return min(max(w.cfg.Settle/4, 20*time.Millisecond), 250*time.Millisecond)
}

// Problems lists the current problems, by path.
func (w *Watcher) Problems() []Problem {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Problem, 0, len(w.problems))
	for _, p := range w.problems {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Stats returns the counters.
func (w *Watcher) Stats() Stats {
	return Stats{
		Detected: w.detected.Load(), Claimed: w.claimed.Load(), Enqueued: w.enqueued.Load(), Failed: w.failed.Load(),
		Rescans: w.rescans.Load(), Overflows: w.overflows.Load(), EnqueueErrors: w.enqueueErrors.Load(),
	}
}

// ignored says whether a name is skipped until it is renamed: hidden files
// and the temporary names of downloads, editors and office programs.
func ignored(name string) bool {
	lower := strings.ToLower(name)
	switch {
	case strings.HasPrefix(name, "."), strings.HasPrefix(name, "~$"), strings.HasSuffix(name, "~"):
		return true
	}
	for _, suffix := range []string{".part", ".tmp", ".crdownload", ".swp"} {
		if strings.HasSuffix(lower, suffix) {
			return true
		}
	}
	return false
}

// locate maps an absolute path in the drop folder to its asset type and path
// below the type folder. ok is false for paths the watcher leaves alone
// (hidden or temporary names, the root itself); problem is set for paths in
// a folder of an unknown type.
func (w *Watcher) locate(path string) (typ, rel string, ok bool, problem string) {
	r, err := filepath.Rel(w.root, path)
	if err != nil || r == "." || strings.HasPrefix(r, "..") {
		return "", "", false, ""
	}
	parts := strings.Split(filepath.ToSlash(r), "/")
	for _, p := range parts {
		if ignored(p) {
			return "", "", false, ""
		}
	}
	if len(parts) == 1 {
		return DefaultType, parts[0], true, ""
	}
	if !w.types[parts[0]] {
		return "", "", false, parts[0]
	}
	return parts[0], strings.Join(parts[1:], "/"), true, ""
}

// report records a problem and logs it the first time it is seen.
func (w *Watcher) report(path, kind, msg string) {
	w.mu.Lock()
	p, seen := w.problems[path]
	if seen && p.Message == msg {
		w.mu.Unlock()
		return
	}
	w.problems[path] = Problem{Path: path, Kind: kind, Message: msg, Since: time.Now().UTC()}
	w.mu.Unlock()
	w.log.Warn("watcher.problem", "path", path, "kind", kind, "problem", msg)
}

func (w *Watcher) unknownTypeMessage(folder string) string {
	known := make([]string, 0, len(w.types))
	for t := range w.types {
		known = append(known, t)
	}
	sort.Strings(known)
	return fmt.Sprintf("folder %q is not a registered asset type (known: %s): its files are left where they are; move them into one of those folders", folder, strings.Join(known, ", "))
}

// consider looks at one path (from an event or a rescan) and adds or updates
// its candidate.
func (w *Watcher) consider(path string, fromEvent bool) {
	typ, rel, ok, unknown := w.locate(path)
	if unknown != "" {
		w.report(filepath.Join(w.root, unknown), "unknown-type", w.unknownTypeMessage(unknown))
		return
	}
	if !ok {
		return
	}
	st, err := os.Lstat(path)
	if err != nil {
		w.forget(path)
		return
	}
	switch mode := st.Mode(); {
	case mode&fs.ModeSymlink != 0:
		target, _ := os.Readlink(path)
		w.report(path, "symlink", fmt.Sprintf("symlink to %q: dab never follows links; copy the file itself into the drop folder", target))
		return
	case mode.IsDir():
		return
	case !mode.IsRegular():
		w.report(path, "not-a-file", fmt.Sprintf("a %s, not a regular file: skipped", kindOf(mode)))
		return
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	c, known := w.pending[path]
	if !known {
		c = &candidate{typ: typ, rel: rel, size: st.Size(), mtime: st.ModTime(), lastChange: now, looks: 1}
		c.renamedIn = fromEvent && metadataChangedAfterWrite(st)
		w.pending[path] = c
		w.detected.Add(1)
		return
	}
	if c.inflight {
		return
	}
	if st.Size() != c.size || !st.ModTime().Equal(c.mtime) {
		c.size, c.mtime, c.lastChange, c.looks, c.renamedIn = st.Size(), st.ModTime(), now, 1, false
	}
}

// metadataChangedAfterWrite reports whether the file's inode changed after
// its last data write (ctime after mtime). A write moves both; a rename into
// the folder moves only ctime. So a file whose last change was a rename is
// complete already, even if its bytes were written a moment ago elsewhere.
func metadataChangedAfterWrite(st fs.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	ctime := time.Unix(sys.Ctim.Sec, sys.Ctim.Nsec)
	return ctime.After(st.ModTime())
}

func kindOf(mode fs.FileMode) string {
	switch {
	case mode&fs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case mode&fs.ModeSocket != 0:
		return "socket"
	case mode&fs.ModeDevice != 0, mode&fs.ModeCharDevice != 0:
		return "device"
	default:
		return "special file (" + mode.Type().String() + ")"
	}
}

func (w *Watcher) forget(path string) {
	w.mu.Lock()
	if c, ok := w.pending[path]; ok && !c.inflight {
		delete(w.pending, path)
	}
	w.mu.Unlock()
}

// ready takes a look at every pending file and returns those to claim now.
// A file is complete when two looks at least Settle apart saw the same size
// and modification time, or, if it was renamed into the folder, at the
// second look.
func (w *Watcher) ready(now time.Time) []claimJob {
	w.mu.Lock()
	paths := make([]string, 0, len(w.pending))
	for p, c := range w.pending {
		if !c.inflight && !now.Before(c.notBefore) {
			paths = append(paths, p)
		}
	}
	w.mu.Unlock()
	// Claiming while Redis is down would only move files out of sight.
	if w.queueIsDown(now) {
		return nil
	}
	var jobs []claimJob
	for _, p := range paths {
		st, err := os.Lstat(p)
		w.mu.Lock()
		c, ok := w.pending[p]
		if !ok || c.inflight {
			w.mu.Unlock()
			continue
		}
		switch {
		case err != nil || !st.Mode().IsRegular():
			delete(w.pending, p) // gone, or replaced by something that is not a file
			w.mu.Unlock()
			if err == nil {
				w.consider(p, false)
			}
			continue
		case st.Size() != c.size || !st.ModTime().Equal(c.mtime):
			c.size, c.mtime, c.lastChange, c.looks, c.renamedIn = st.Size(), st.ModTime(), now, 1, false
		default:
			c.looks++
			if c.looks >= 2 && (c.renamedIn || now.Sub(c.lastChange) >= w.cfg.Settle) {
				c.inflight = true
				jobs = append(jobs, claimJob{path: p, c: *c})
			}
		}
		w.mu.Unlock()
	}
	return jobs
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
	log.Info("watcher.claimed", "spool_id", m.ID, "key", m.Key(), "bytes", m.Size)
	if err := w.enqueue(ctx, m); err != nil {
		// The queue is down: the file goes back where it was, and is taken
		// again once the queue answers. If its name was taken meanwhile it
		// waits in the spool and its enqueue is retried.
		if rerr := w.spool.Return(m.ID, job.path); rerr != nil {
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
	dst := filepath.Join(w.cfg.FailedDir, job.c.typ, filepath.FromSlash(job.c.rel))
	where, err := spool.MoveFile(job.path, dst)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		w.report(job.path, "bad-name", fmt.Sprintf("%v; moving it to the failed folder failed too: %v", cause, err))
		return
	}
	w.failed.Add(1)
	note := spool.FailureNote{Type: job.c.typ, Path: job.c.rel, Size: job.c.size, Source: "watcher",
		Failure: spool.Failure{Code: "InvalidName", Message: cause.Error() + ": rename the file"}}
	if err := spool.WriteFailureNote(where, note); err != nil {
		w.log.Error("watcher.failure_note", "path", where, "error", err.Error())
	}
	w.log.Warn("watcher.rejected", "path", job.path, "moved_to", where, "reason", cause.Error())
}

// enqueue queues a spool entry's upload. On failure it starts the back-off
// during which no new files are claimed, and returns the error.
func (w *Watcher) enqueue(ctx context.Context, m *spool.Manifest) error {
	t, err := task.NewUpload(task.UploadPayload{SpoolID: m.ID, Type: m.Type, Key: m.Key()}, asynq.Queue(w.cfg.Queue))
	if err == nil {
		_, err = w.queue.EnqueueContext(ctx, t)
	}
	if err == nil || task.IsAlreadyQueued(err) {
		w.queueUp()
		if err == nil { // an existing task (recovery at start) was counted when it was queued
			w.enqueued.Add(1)
			w.log.Info("watcher.queued", "task_id", task.UploadTaskID(m.ID), "spool_id", m.ID, "key", m.Key())
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
		if r.Action != "removed" {
			w.log.Info("watcher.recovered", "spool_id", r.ID, "action", r.Action, "path", r.Path)
		}
	}
	entries, err := w.spool.List()
	if err != nil {
		w.log.Error("watcher.recover_failed", "error", err.Error())
		return
	}
	for _, m := range entries {
		if f, _ := w.spool.Failed(m.ID); f != nil {
			continue // archived for good; an operator re-runs it
		}
		if err := w.enqueue(ctx, m); err != nil {
			w.keepUnqueued(m)
		}
	}
}
