// Recycling the folders and notes of removed entries. An entry costs the
// filesystem three new inodes (its folder, its origin note, its manifest)
// and its removal frees them again. On ext4 without a journal, every new
// inode is searched for past each inode freed in the last minute or more
// (the kernel's recently_deleted check), so in a steady stream of files
// each claim grew slower with every file before it: a third to two thirds
// of the watcher's CPU in P1a (perf). A removed entry's folder, with its
// manifest and its spare note, goes to .free instead; a new entry takes one
// from there, renames its spare note to origin.json and writes its notes
// over the old ones in place. In steady state a claim allocates no inode.
//
// What a recycled folder holds when a new entry takes it: manifest.json
// and spare, nothing else. recycle removes the data file (the bytes); the
// rest of what the old entry held (a failure mark, an upload ID, what a
// power cut brought back) takeFree removes when it takes the folder, and
// it refuses a folder with subfolders. The old manifest in an incoming
// folder is never read (Recover reads origin.json there, and every commit
// writes the manifest before the folder is renamed into place); a
// stream's entry never gets an origin.json from it (only claims rename
// spare). The data file is never reused: a claimed file is the user's
// inode, which a reader may still hold open and must keep reading the
// bytes it gave. See newIncoming and writeOrigin.

package spool

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	freeDir = ".free"
	// spareFile is an ended claim's origin note, kept for the next claim
	// of a recycled folder to write over.
	spareFile = "spare"
	// freeMax is the most folders .free holds; past it, removed entries are
	// deleted.
	freeMax = 1024
	// freeLookEvery is how often a process that takes folders (the
	// watcher, the intakes) looks at .free again after finding it empty:
	// the worker puts folders there as it removes entries, and a look at an
	// empty folder costs three system calls.
	freeLookEvery = 50 * time.Millisecond
	// freeCountEvery is how often a process that recycles (the worker)
	// counts .free again while it is full.
	freeCountEvery = time.Second
)

// freeFolders is what one process knows of .free.
type freeFolders struct {
	mu sync.Mutex
	// names are folders seen in .free and not taken yet by this process
	// (another may have taken them: a rename then finds nothing).
	names []string
	// looked is when names was last read from .free, and found nothing.
	looked time.Time
	// room is how many folders this process may still add before it
	// counts .free again.
	room    int
	counted time.Time
	// max is freeMax (tests set less).
	max int
}

// writeOrigin writes a claim's origin note into its incoming folder tmp,
// over the folder's spare note when it was recycled. Whatever the spare
// held, no file is in tmp until the note is written and synced: Recover
// reads a note beside no file as a claim that never took its file.
func writeOrigin(tmp string, o *origin, sync bool) error {
	rename(filepath.Join(tmp, spareFile), filepath.Join(tmp, originFile))
	return writeJSONInPlace(filepath.Join(tmp, originFile), o, sync)
}

// takeFree renames a recycled folder to tmp, locked: the lock is taken
// before the rename, so that Recover in another process never finds it in
// .incoming unlocked (and removes it as an abandoned stream). ok is false
// when there is none.
func (s *Spool) takeFree(tmp string) (unlock func(), ok bool) {
	for {
		name, ok := s.nextFree()
		if !ok {
			return nil, false
		}
		from := filepath.Join(s.dir, freeDir, name)
		unlock, err := lockDir(from, false)
		if err != nil {
			continue // another process took it, or is taking it
		}
		if err := renameNoReplace(from, tmp); err != nil {
			unlock()
			continue
		}
		if clean(tmp) {
			return unlock, true
		}
		os.RemoveAll(tmp)
		unlock()
	}
}

// clean removes from a folder taken from .free whatever recycle removed
// but a power cut brought back (recycle does not sync: on a filesystem
// without a journal its removals may be lost while its rename is not), so
// that no entry inherits another's failure mark, upload ID or bytes. false:
// the folder could not be read or holds a folder.
func clean(dir string) bool {
	d, err := openRead(dir)
	if err != nil {
		return false
	}
	des, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return false
	}
	for _, de := range des {
		switch {
		case de.IsDir():
			return false
		case de.Name() == manifestFile || de.Name() == spareFile:
		default:
			if err := os.Remove(filepath.Join(dir, de.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return false
			}
		}
	}
	return true
}

// nextFree is the name of a folder in .free, read from the folder when
// this process knows none and has not found it empty within freeLookEvery.
func (s *Spool) nextFree() (string, bool) {
	f := &s.free
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.names) == 0 {
		if time.Since(f.looked) < freeLookEvery {
			return "", false
		}
		d, err := os.Open(filepath.Join(s.dir, freeDir))
		if err != nil {
			f.looked = time.Now()
			return "", false
		}
		f.names, _ = d.Readdirnames(freeMax)
		d.Close()
		if len(f.names) == 0 {
			f.looked = time.Now()
			return "", false
		}
	}
	name := f.names[len(f.names)-1]
	f.names = f.names[:len(f.names)-1]
	return name, true
}

// recycle moves the folder of a removed entry (trash, already out of
// place) to .free as name, after removing its data file. What else the
// entry held (a failure mark, an upload ID: a few bytes) stays until the
// folder is taken again: takeFree cleans every folder it takes, so a look
// at the folder here (five system calls) would be made twice. noOrigin
// says the entry has no origin note to keep as the spare. false: it was
// not recycled (.free is full, the data file could not be removed), and
// the caller removes it.
func (s *Spool) recycle(trash, name string, noOrigin bool) bool {
	if !s.roomInFree() {
		return false
	}
	if !noOrigin {
		// A claim that ended with its entry (a kept original): its note
		// is a spare now.
		rename(filepath.Join(trash, originFile), filepath.Join(trash, spareFile))
	}
	if err := unix.Unlink(filepath.Join(trash, dataFile)); err != nil && !errors.Is(err, unix.ENOENT) {
		return false
	}
	return renameNoReplace(trash, filepath.Join(s.dir, freeDir, name)) == nil
}

// roomInFree takes one place in .free, counting its folders again when
// this process has used the room it last found (at most every
// freeCountEvery while it is full).
func (s *Spool) roomInFree() bool {
	f := &s.free
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.room <= 0 {
		if time.Since(f.counted) < freeCountEvery {
			return false
		}
		f.counted = time.Now()
		d, err := os.Open(filepath.Join(s.dir, freeDir))
		if err != nil {
			return false
		}
		max := f.max
		if max == 0 {
			max = freeMax
		}
		names, _ := d.Readdirnames(max)
		d.Close()
		f.room = max - len(names)
		if f.room <= 0 {
			return false
		}
	}
	f.room--
	return true
}
