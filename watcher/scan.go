// Finding files: file events (fsnotify, one watch per folder, added as
// folders appear) and full rescans (at start, on an event overflow, and
// periodically, since events can be lost or never sent). Both only hand paths
// to consider (settle.go); a rescan finds everything events would have.

package watcher

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
)

// handleEvent reacts to one file event. Events only speed things up: a
// rescan finds everything they would have found.
func (w *Watcher) handleEvent(ev fsnotify.Event) {
	switch {
	case ev.Has(fsnotify.Create):
		st, err := os.Lstat(ev.Name)
		if err != nil {
			return
		}
		if st.IsDir() {
			// Files may land in a new folder before its watch is added:
			// walk it once now.
			w.walk(ev.Name)
			return
		}
		w.consider(ev.Name, true)
	case ev.Has(fsnotify.Write):
		w.consider(ev.Name, false)
	case ev.Has(fsnotify.Remove), ev.Has(fsnotify.Rename):
		w.forget(ev.Name)
		w.mu.Lock()
		delete(w.watched, ev.Name)
		delete(w.problems, ev.Name)
		w.mu.Unlock()
	}
	// Chmod alone says nothing about completeness; the next look decides.
}

// handleError reacts to an error from the event source. An overflow means
// events were lost: rescan.
func (w *Watcher) handleError(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		w.overflows.Add(1)
		w.log.Warn("watcher.overflow", "note", "file events were lost; rescanning the drop folder")
		w.requestRescan()
		return
	}
	w.log.Error("watcher.event_error", "error", err.Error())
}

func (w *Watcher) requestRescan() {
	select {
	case w.rescanNow <- struct{}{}:
	default: // one is pending already
	}
}

// rescan walks the whole drop folder.
func (w *Watcher) rescan() {
	// Counted when done: a finished rescan has seen every file there was
	// when it started.
	defer w.rescans.Add(1)
	// Problems of paths that are gone are forgotten, so they are reported
	// again if they come back.
	w.mu.Lock()
	for p := range w.problems {
		if _, err := os.Lstat(p); err != nil {
			delete(w.problems, p)
		}
	}
	w.mu.Unlock()
	w.walk(w.root)
}

// walk visits a folder tree: it watches every folder it may take files from
// and considers every file. It never follows symlinks.
func (w *Watcher) walk(dir string) {
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				w.report(path, "unreadable", "cannot read: "+err.Error())
			}
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			// A folder directly in the drop folder is a type folder: it must
			// name a registered type (files directly in the drop folder are
			// generic, folders are not).
			if filepath.Dir(path) == w.root {
				name := filepath.Base(path)
				if ignored(name) {
					return fs.SkipDir
				}
				if !w.types[name] {
					w.report(path, "unknown-type", w.unknownTypeMessage(name))
					return fs.SkipDir
				}
			}
			if path != w.root {
				if _, _, ok, unknown := w.locate(path); unknown != "" {
					w.report(filepath.Join(w.root, unknown), "unknown-type", w.unknownTypeMessage(unknown))
					return fs.SkipDir
				} else if !ok {
					return fs.SkipDir // hidden folder
				}
			}
			w.watch(path)
			return nil
		}
		w.consider(path, false)
		return nil
	})
}

// watch adds an event watch on a folder once.
func (w *Watcher) watch(dir string) {
	if w.addWatch == nil {
		return // polling
	}
	w.mu.Lock()
	done := w.watched[dir]
	w.mu.Unlock()
	if done {
		return
	}
	if err := w.addWatch(dir); err != nil {
		w.report(dir, "no-events", "cannot watch for file events ("+err.Error()+"): files here are found by rescans only; raise fs.inotify.max_user_watches or set DAB_POLL=true")
		return
	}
	w.mu.Lock()
	w.watched[dir] = true
	w.mu.Unlock()
}
