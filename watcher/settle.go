// Deciding that a file is complete. fsnotify has no close-write event, so a
// file seen by an event or a rescan becomes a candidate, and is ready to be
// claimed when two looks at least the settle time apart saw the same size
// and mtime, or at the second look when it was renamed into the folder. (Whether a
// process still has it open is checked by the claim itself: see
// spool.Claim.)

package watcher

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// candidate is a file seen in the drop folder that is not taken yet.
type candidate struct {
	typ, rel   string // asset type and path below the type folder
	size       int64
	mtime      time.Time
	lastChange time.Time
	looks      int
	// settled: complete at the second look, without waiting the settle
	// time (renamed into the folder, or unchanged for longer than the
	// settle time when first seen).
	settled   bool
	seq       uint64    // its place in Watcher.arrivals
	notBefore time.Time // back-off after a failed claim
	inflight  bool
	inUse     bool // a claim found it open for writing (logged once)
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
		c.settled = fromEvent && metadataChangedAfterWrite(st) || unchangedFor(st, now) >= w.cfg.Settle
		w.seq++
		c.seq = w.seq
		w.pending[path] = c
		w.arrivals = append(w.arrivals, arrival{path: path, seq: c.seq})
		w.detected.Add(1)
		return
	}
	if c.inflight {
		return
	}
	if st.Size() != c.size || !st.ModTime().Equal(c.mtime) {
		c.size, c.mtime, c.lastChange, c.looks, c.settled = st.Size(), st.ModTime(), now, 1, false
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

// unchangedFor is how long ago the file's data or inode last changed (the
// later of mtime and ctime): a file found unchanged for longer than the
// settle time (a backlog when dab starts, a file a rescan finds) has
// settled already, and waiting the settle time again would only delay it.
func unchangedFor(st fs.FileInfo, now time.Time) time.Duration {
	last := st.ModTime()
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if ctime := time.Unix(sys.Ctim.Sec, sys.Ctim.Nsec); ctime.After(last) {
			last = ctime
		}
	}
	return now.Sub(last)
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

// lookSlack is how many files past its limit ready looks at, so that files
// still settling make progress while the ready ones fill the limit.
const lookSlack = 256

// readyMax is the most complete files waiting for a claimer.
const readyMax = 1024

// checkInterval is how often pending files are looked at: often enough that
// a settled file is taken soon after its settle time.
func (w *Watcher) checkInterval() time.Duration {
	return min(max(w.cfg.Settle/4, 20*time.Millisecond), 250*time.Millisecond)
}

// arrival is a pending path and the seq its candidate got when first seen.
type arrival struct {
	path string
	seq  uint64
}

// ready takes a look at pending files, oldest first, and returns those to
// claim now, at most limit. A file is complete when two looks at least Settle apart saw
// the same size and modification time, or, if it was renamed into the
// folder, at the second look. It looks at no more than limit+lookSlack
// files per call: with a backlog of 100,000 files, looking at all of them
// every check interval would cost more than claiming them.
func (w *Watcher) ready(now time.Time, limit int) []claimJob {
	if limit <= 0 {
		return nil
	}
	w.mu.Lock()
	paths := make([]string, 0, min(len(w.pending), limit+lookSlack))
	kept := w.arrivals[:0]
	for _, a := range w.arrivals {
		c, ok := w.pending[a.path]
		if !ok || c.seq != a.seq {
			continue // taken or gone (or seen anew, further back)
		}
		kept = append(kept, a)
		if len(paths) < limit+lookSlack && !c.inflight && !now.Before(c.notBefore) {
			paths = append(paths, a.path)
		}
	}
	clear(w.arrivals[len(kept):]) // let the dropped paths be collected
	w.arrivals = kept
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
			c.size, c.mtime, c.lastChange, c.looks, c.settled = st.Size(), st.ModTime(), now, 1, false
		case len(jobs) == limit:
			// Enough for now: looked at again in a later call.
		default:
			c.looks++
			if c.looks >= 2 && (c.settled || now.Sub(c.lastChange) >= w.cfg.Settle) {
				c.inflight = true
				jobs = append(jobs, claimJob{path: p, c: *c})
			}
		}
		w.mu.Unlock()
	}
	return jobs
}
