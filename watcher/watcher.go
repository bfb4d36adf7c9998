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

// This file holds the Watcher's configuration, its construction and its run
// loop, and what it tells operators (Stats, Problems). A file's way through
// the watcher has one file per step: scan.go (events and rescans find it),
// names.go (its type and path, or why it is left alone), settle.go (it is
// complete), claim.go (it moves into the spool) and queue.go (its upload is
// enqueued, retried while Redis is down, recovered at start).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/plugin"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/worker/task"
)

// Defaults of Config; internal/config's settings state the same values
// (cmd/dab's defaults test keeps them in step).
const (
	RescanIntervalDefault = 30 * time.Second
	ClaimersDefault       = 32
)

// Config tunes a Watcher.
type Config struct {
	// DropDir is the folder to watch (required).
	DropDir string
	// FailedDir receives files with names that cannot be uploaded, each with
	// <name>.error.json beside it (required).
	FailedDir string
	// Types are the registered asset types, sorted (plugin.Registry.Types);
	// each gets a folder (required).
	Types []string
	// Settle is how long a file must stay unchanged before it is taken.
	Settle time.Duration
	// RescanInterval is the period of full rescans (default 30s).
	RescanInterval time.Duration
	// Poll disables file events: rescans alone find files.
	Poll bool
	// Claimers is the number of files claimed at once (default
	// ClaimersDefault).
	Claimers int
	// StopGrace is how long the claims under way at a stop may go on
	// queueing their files (default StopGraceDefault).
	StopGrace time.Duration
	// Logger receives the watcher's events; default slog.Default().
	Logger *slog.Logger
	// Queue receives the upload tasks (task.UploadQueue of this host);
	// default task.QueueUploads.
	Queue string
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

// Watcher watches one drop folder.
type Watcher struct {
	cfg   Config
	root  string
	types map[string]bool
	spool *spool.Spool
	queue Enqueuer
	log   *slog.Logger

	mu      sync.Mutex
	pending map[string]*candidate // by absolute path
	// arrivals lists the pending paths in the order they were first seen,
	// so that a backlog is claimed oldest first; entries whose candidate
	// is gone or was seen anew are dropped as ready walks it.
	arrivals   []arrival
	seq        uint64
	problems   map[string]Problem // by path
	watched    map[string]bool    // folders with an fsnotify watch
	unqueued   map[string]*spool.Manifest
	queueDown  time.Time // enqueues fail until at least this time
	queueDelay time.Duration

	rescanNow chan struct{}
	claims    chan []claimJob
	// addWatch adds an fsnotify watch; nil when polling.
	addWatch func(string) error

	detected, claimed, enqueued, failed, rescans, overflows, enqueueErrors atomic.Int64
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
		cfg.RescanInterval = RescanIntervalDefault
	}
	if cfg.Claimers <= 0 {
		cfg.Claimers = ClaimersDefault
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = StopGraceDefault
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
		unqueued: map[string]*spool.Manifest{}, rescanNow: make(chan struct{}, 1), claims: make(chan []claimJob),
	}
	for _, t := range cfg.Types {
		if err := naming.ValidateType(t); err != nil {
			return nil, fmt.Errorf("watcher: %w", err)
		}
		w.types[t] = true
	}
	if !w.types[plugin.DefaultType] {
		return nil, fmt.Errorf("watcher: type %q must be registered: files directly in the drop folder have it", plugin.DefaultType)
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
			for batch := range w.claims {
				w.claimBatch(ctx, batch)
			}
		}()
	}
	defer func() {
		close(w.claims)
		claimers.Wait()
		w.log.Info("watcher.stopped")
	}()

	// Rescans walk the whole tree (100,000 files take seconds): they run
	// beside the loop, one at a time, so that claims and events go on.
	var rescans sync.WaitGroup
	running := make(chan struct{}, 1)
	startRescan := func() {
		select {
		case running <- struct{}{}:
			rescans.Add(1)
			go func() {
				defer func() { <-running; rescans.Done() }()
				w.rescan()
			}()
		default: // one runs already: it will see the files
		}
	}
	defer rescans.Wait()
	startRescan()
	w.log.Info("watcher.started", "drop_dir", w.root, "types", w.cfg.Types, "poll", w.cfg.Poll,
		"settle", w.cfg.Settle.String(), "rescan_interval", w.cfg.RescanInterval.String())
	rescan := time.NewTicker(w.cfg.RescanInterval)
	defer rescan.Stop()
	check := time.NewTicker(w.checkInterval())
	defer check.Stop()
	// Complete files wait here for a claimer; the loop hands them over
	// between events instead of blocking on the claimers, so that events
	// are never left unread while a backlog is claimed.
	var queue []claimJob
	for {
		// A claimer takes its share of the waiting files as one batch (one
		// group commit), at most claimBatchMax: a burst is spread over the
		// claimers, a lone file goes alone.
		var feed chan []claimJob
		var next []claimJob
		if len(queue) > 0 {
			n := min(claimBatchMax, max(1, len(queue)/w.cfg.Claimers))
			feed, next = w.claims, queue[:n]
		}
		select {
		case feed <- next:
			queue = queue[len(next):]
		case <-ctx.Done():
			return nil // watcher.stopped once the claims under way are done
		case ev := <-events:
			w.handleEvent(ev)
		case err := <-errs:
			w.handleError(err)
		case <-w.rescanNow:
			startRescan()
		case <-rescan.C:
			startRescan()
		case <-check.C:
			w.retryUnqueued(ctx)
			queue = append(queue, w.ready(time.Now(), readyMax-len(queue))...)
		}
	}
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

// Stats returns the counters.
func (w *Watcher) Stats() Stats {
	return Stats{
		Detected: w.detected.Load(), Claimed: w.claimed.Load(), Enqueued: w.enqueued.Load(), Failed: w.failed.Load(),
		Rescans: w.rescans.Load(), Overflows: w.overflows.Load(), EnqueueErrors: w.enqueueErrors.Load(),
	}
}
