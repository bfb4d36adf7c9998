// Claiming moves a file that a user dropped somewhere into the spool. The
// rename that takes it is atomic, so of two watchers (or a rescan racing an
// event) exactly one gets the file; the other sees ErrGone. Every step leaves
// enough on disk (an origin note in the incoming folder, a lock held while
// the claim runs) for Recover to finish or undo a claim that a crash cut
// short: a claimed file is never lost.
//
// A claim that does not go through is undone by a rename back, never by a
// copy: the file returns as it was (same inode, mode and mtime), so a writer
// that still has it open keeps writing into it, and a watcher does not see a
// new file to wait for. Unclaim, the undo a watcher asks for when it cannot
// enqueue, lives here for the same reason.

package spool

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Claim errors callers branch on.
var (
	// ErrGone: the file was no longer there (another watcher took it, or it
	// was deleted).
	ErrGone = errors.New("file is gone")
	// ErrChanging: the file changed while it was being claimed; it was put
	// back and should be looked at again later.
	ErrChanging = errors.New("file changed while being claimed")
	// ErrInUse: a process still has the file open for writing (see
	// openForWriting); it was left (or put back) where it was and should be
	// looked at again later.
	ErrInUse = errors.New("file is still open for writing")
)

const originFile = "origin.json"

// origin records where a claimed file came from, for recovery.
type origin struct {
	// Source is the path the file had in the drop folder.
	Source string `json:"source"`
	// Claim is the hidden name the file was renamed to next to Source when
	// the spool is on another filesystem. The copy is made from there, and
	// the original stays whole under that name until the entry ends (with a
	// shared spool, until the entry is committed).
	Claim string `json:"claim,omitempty"`
	Input struct {
		Type     string            `json:"type"`
		Path     string            `json:"path"`
		Metadata map[string]string `json:"metadata,omitempty"`
		Source   string            `json:"source"`
	} `json:"input"`
}

// FileState is what a watcher saw of a file when it decided the file was
// complete; Claim refuses a file that no longer looks like that.
type FileState struct {
	Size    int64
	ModTime time.Time
}

// Claim takes the file at src into a new entry. seen is the state the caller
// judged complete; a file that differs from it, or changes while it is being
// claimed, is put back and ErrChanging returned. A file that a process still
// has open for writing is left where it is (ErrInUse).
func (s *Spool) Claim(src string, in Input, seen FileState) (*Manifest, error) {
	// A first, cheap look: a file still being written is not moved at all
	// (and put back, on every look while its writer pauses).
	if s.openForWriting(src) {
		return nil, fmt.Errorf("spool: claim %s: %w", src, ErrInUse)
	}
	m, err := s.newManifest(in)
	if err != nil {
		return nil, err
	}
	tmp, unlock, err := s.newIncoming(m.ID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	o := &origin{Source: src}
	o.Input.Type, o.Input.Path, o.Input.Metadata, o.Input.Source = in.Type, m.Path, in.Metadata, in.Source
	// Durable before the file moves: from then on it is what tells
	// Recover where the file came from. The note, its folder's entry for it
	// and .incoming's entry for the folder (new, or renamed from .free):
	// without a journal that orders them (ext4 without one, or another
	// filesystem), the rename below may reach the disk first, and a power
	// cut would leave the file in a folder the disk does not have. The
	// batch claim makes the same three durable with one sync.
	if err := writeOrigin(tmp, o, true); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := errors.Join(syncDir(tmp), syncDir(filepath.Dir(tmp))); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	data := filepath.Join(tmp, dataFile)
	err = rename(src, data)
	if errors.Is(err, unix.EXDEV) {
		// The spool is on another filesystem: the atomic step is a rename to
		// a hidden name beside the file, and the copy is made from there.
		o.Claim = filepath.Join(filepath.Dir(src), ".dab-claim-"+m.ID)
		// The note now names the claim name; its rename into place must be
		// on disk before the file takes that name.
		if err = writeJSONSync(filepath.Join(tmp, originFile), o); err == nil {
			err = syncDir(tmp)
		}
		if err == nil {
			err = rename(src, o.Claim)
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("spool: claim %s: %w", src, ErrGone)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("spool: claim %s: %w", src, err)
	}
	// The file is ours now, under a name no writer opens. Checked here, after
	// the rename, a writer that opened it before cannot slip through.
	held := o.held(tmp)
	if err := s.checkClaimed(held, seen); err != nil {
		return nil, s.putBack(tmp, o, err)
	}
	want, sum := seen, ""
	if o.Claim != "" {
		if sum, want, err = copyClaimed(o.Claim, data, seen); err != nil {
			return nil, s.putBack(tmp, o, err)
		}
	}
	if err := s.finish(tmp, data, m, want, sum); err != nil {
		return nil, s.putBack(tmp, o, err)
	}
	// Committed. One last look, for writers openForWriting cannot see: a
	// write since the checks above would be cut off, so the claim is undone
	// while the entry is known to nobody else, and the file is taken again,
	// whole, later.
	held = s.DataPath(m.ID)
	if o.Claim != "" {
		held, want = o.Claim, seen
	}
	if err := s.checkClaimed(held, want); err != nil {
		return nil, s.uncommit(m.ID, o, err)
	}
	if o.Claim != "" && s.keepOriginals {
		// Across filesystems a writer dab cannot see writes into the
		// original, not into the copy: removed now, what it writes next
		// would vanish with it. The original stays under its claim name
		// (and the origin note in the entry) until the entry ends, as a
		// file claimed by rename stays in the entry: OpenData refuses the
		// entry if the original grew, Reject moves the original (every
		// byte) to the failed folder, Remove deletes it, or gives it back
		// to be taken again whole if it grew, and Unclaim gives it back.
		return m, nil
	}
	s.endClaim(m.ID, o)
	return m, nil
}

// keptOriginal returns the origin note of entry id and the state of its
// original, when the entry was claimed across filesystems and its original
// is still kept under its claim name (see Claim). ok is false for every
// other entry, and where the original cannot be seen (a worker on another
// host than the drop folder's).
func (s *Spool) keptOriginal(id string) (o *origin, st fs.FileInfo, ok bool) {
	o, st, ok, _ = s.keptOriginalNoted(id)
	return o, st, ok
}

// keptOriginalNoted is keptOriginal that also tells an entry without an
// origin note (noted false) from the others.
func (s *Spool) keptOriginalNoted(id string) (o *origin, st fs.FileInfo, ok, noted bool) {
	if !ValidID(id) {
		return nil, nil, false, true
	}
	b, err := readFile(filepath.Join(s.dir, id, originFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, false, false
	}
	if err != nil {
		return nil, nil, false, true
	}
	o = &origin{}
	// Only the name Claim gives (beside the drop path, named after the
	// entry) is ever deleted, moved or read as the original.
	if json.Unmarshal(b, o) != nil || o.Claim == "" || o.Claim != filepath.Join(filepath.Dir(o.Source), ".dab-claim-"+id) {
		return nil, nil, false, true
	}
	if st, err = os.Lstat(o.Claim); err != nil || !st.Mode().IsRegular() {
		return nil, nil, false, true
	}
	return o, st, true, true
}

// endKept ends the claim of entry id when its original is kept (see
// Claim): the original goes if it is as it was copied; if it grew since, it
// goes back to its drop path (or beside it, see returnFile), to be taken
// again whole: what was written after the copy does not vanish.
func (s *Spool) endKept(id string) error {
	o, st, ok := s.keptOriginal(id)
	if !ok {
		return nil
	}
	m, err := s.Get(id)
	if err != nil {
		return err
	}
	size := m.Size
	if st.Size() == size {
		if err := os.Remove(o.Claim); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if _, err := returnFile(o.Claim, o.Source, id); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the file it was copied from grew after the copy (%d bytes, the copy %d) and could not be put back into the drop folder: it is at %s: %w", st.Size(), size, o.Claim, err)
	}
	return nil
}

// held is where the claimed file (the inode that was at Source) is now.
func (o *origin) held(tmp string) string {
	if o.Claim != "" {
		return o.Claim
	}
	return filepath.Join(tmp, dataFile)
}

// checkClaimed checks that no process has the claimed file open for writing
// and that it is still the file the caller judged complete. Writers first: a
// writer that closes between the two checks has written already, and the
// state shows it.
func (s *Spool) checkClaimed(path string, want FileState) error {
	if s.openForWriting(path) {
		return ErrInUse
	}
	return checkState(path, want)
}

// checkState returns ErrChanging unless path is a regular file of want's size
// and mtime.
func checkState(path string, want FileState) error {
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Size() != want.Size || !st.ModTime().Equal(want.ModTime) {
		return ErrChanging
	}
	return nil
}

// copyClaimed copies a file claimed across filesystems into the entry,
// keeping its mode and mtime, and checks that the original did not change
// meanwhile. It returns the SHA-256 of what it read and the copy's state
// (what finish must find).
func copyClaimed(claimed, data string, seen FileState) (string, FileState, error) {
	sum, st, err := copyFile(claimed, data)
	if err != nil {
		return "", FileState{}, err
	}
	// What was opened must be the file checked (a name in the drop folder
	// can be swapped between the check and the open).
	if st.Size() != seen.Size || !st.ModTime().Equal(seen.ModTime) {
		os.Remove(data)
		return "", FileState{}, ErrChanging
	}
	if err := keepMetadata(data, st); err != nil {
		return "", FileState{}, err
	}
	// A writer dab cannot see may have written while the copy was made.
	if err := checkState(claimed, seen); err != nil {
		return "", FileState{}, err
	}
	// The copy's mtime is compared as its filesystem stores it, which may be
	// coarser than the original's.
	cst, err := os.Lstat(data)
	if err != nil {
		return "", FileState{}, err
	}
	return sum, FileState{Size: cst.Size(), ModTime: cst.ModTime()}, nil
}

// finish hashes the claimed data, checks it did not change meanwhile (and,
// for a copy, that it reads back as sum), and commits the entry. want is the
// state data must have; a zero want.ModTime checks only that the size held.
func (s *Spool) finish(tmp, data string, m *Manifest, want FileState, sum string) error {
	if err := measure(data, m, want, sum, true); err != nil {
		return err
	}
	// The origin note stays until the claim ends (endClaim): until the entry
	// is in place, it is what tells Recover that this folder holds a user's
	// file and not an abandoned stream; after, that the original of a copy
	// may still be beside Source.
	return s.commit(tmp, m)
}

// writebackAhead is the size from which a claim starts the file's writeback
// before hashing it: a system call more for each file, worth it only where
// the writeback takes as long as the hashing.
const writebackAhead = 8 << 20

// measure hashes the claimed data into m (size, SHA-256, content type),
// with sync also fsyncing it, and checks that it did not change meanwhile
// (and, for a copy, that it reads back as sum).
func measure(data string, m *Manifest, want FileState, sum string, sync bool) error {
	f, err := openRead(data)
	if err != nil {
		return err
	}
	if want.Size >= writebackAhead {
		// The claim ends in an fsync (or the batch's syncfs) that writes
		// back whatever the file's writer left dirty; started now, that
		// writeback runs while the file is hashed instead of after.
		startWriteback(f)
	}
	h := sha256.New()
	sniff := &sniffer{}
	n, err := io.Copy(io.MultiWriter(h, sniff), f)
	if err == nil && sync {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return err
	}
	// A writer that still has the file open would have changed it by now.
	st, err := os.Lstat(data)
	if err != nil {
		return err
	}
	if st.Size() != n || (!want.ModTime.IsZero() && (n != want.Size || !st.ModTime().Equal(want.ModTime))) {
		return ErrChanging
	}
	got := hex.EncodeToString(h.Sum(nil))
	if sum != "" && got != sum {
		return fmt.Errorf("the copy does not read back the same (sha256 %s, copied %s): disk error?", got, sum)
	}
	m.Size, m.SHA256, m.ContentType = n, got, contentType(m.Name, sniff.buf)
	return nil
}

// endClaim finishes a committed claim: the original of a copy goes (the
// entry holds a verified copy), then the origin note. A crash in between
// leaves the note, and Recover ends the claim.
func (s *Spool) endClaim(id string, o *origin) {
	if o.Claim != "" {
		if err := os.Remove(o.Claim); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return
		}
	}
	// Kept as the spare note of the folder when it is recycled.
	rename(filepath.Join(s.dir, id, originFile), filepath.Join(s.dir, id, spareFile))
}

// uncommit undoes a committed claim that no one has seen yet: the file goes
// back where it came from, then the entry goes. Whenever a crash stops it,
// the entry has no data file left, which tells Recover to finish the undo.
func (s *Spool) uncommit(id string, o *origin, cause error) error {
	held := s.DataPath(id)
	if o.Claim != "" {
		// The original is whole under its claim name: the copy goes first.
		if err := os.Remove(held); err != nil {
			return fmt.Errorf("spool: claim of %s: %w, and undoing it failed (%v): entry %s holds it", o.Source, cause, err, id)
		}
		held = o.Claim
	}
	if _, err := returnFile(held, o.Source, id); err != nil {
		// The entry stays: it holds the file, if not all of what was
		// written since.
		return fmt.Errorf("spool: claim of %s: %w, and putting it back failed (%v): entry %s holds it", o.Source, cause, err, id)
	}
	if err := s.Remove(id); err != nil {
		return fmt.Errorf("spool: claim of %s: %w; the file is back, and entry %s could not be removed: %v", o.Source, cause, id, err)
	}
	return fmt.Errorf("spool: claim %s: %w", o.Source, cause)
}

// putBack returns a claimed file to where it came from, by a rename (the
// same file, with its mode and mtime), without replacing a file that
// appeared there meanwhile (then it keeps both: see returnFile).
func (s *Spool) putBack(tmp string, o *origin, cause error) error {
	if o.Claim != "" {
		// The original is whole under its claim name; a copy, whole or not,
		// is of no use.
		os.Remove(filepath.Join(tmp, dataFile))
	}
	held := o.held(tmp)
	if _, err := returnFile(held, o.Source, filepath.Base(tmp)); err != nil {
		return fmt.Errorf("spool: claim of %s failed (%w) and the file could not be put back: it is at %s: %v", o.Source, cause, held, err)
	}
	os.RemoveAll(tmp)
	return fmt.Errorf("spool: claim %s: %w", o.Source, cause)
}

// returnFile renames from back to src, or, when a new file took src
// meanwhile, next to it as src.dab-returned-<id>. It returns where the file
// went.
func returnFile(from, src, id string) (string, error) {
	err := renameNoReplace(from, src)
	if errors.Is(err, fs.ErrExist) {
		alt := src + ".dab-returned-" + id
		return alt, renameNoReplace(from, alt)
	}
	return src, err
}

// Unclaim undoes a Claim: it gives an entry's file back to path (where a
// watcher claimed it from) and removes the entry. It never replaces a file:
// when path is taken it returns fs.ErrExist and the entry stays.
func (s *Spool) Unclaim(id, path string) error {
	if _, err := s.entryDir(id); err != nil {
		return err
	}
	if o, _, ok := s.keptOriginal(id); ok {
		// Claimed across filesystems: the original goes back (the same
		// file, with whatever was written to it since), the copy goes
		// first, as in uncommit: an entry without its data beside its
		// original is a claim being undone, which Recover finishes; an
		// entry with its data and its original back in the drop folder
		// would be uploaded, and the file taken and uploaded again.
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("spool: return the original of entry %s to %s: %w", id, path, fs.ErrExist)
		}
		if err := os.Remove(s.DataPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("spool: return the original of entry %s to %s: %w", id, path, err)
		}
		// A file that took path meanwhile stays; the original goes beside it.
		if _, err := returnFile(o.Claim, path, id); err != nil {
			return fmt.Errorf("spool: return the original of entry %s to %s (it is at %s): %w", id, path, o.Claim, err)
		}
		s.crash("unclaim.returned")
		return s.Remove(id)
	}
	if err := renameNoReplace(filepath.Join(s.dir, id, dataFile), path); err != nil {
		return fmt.Errorf("spool: return entry %s to %s: %w", id, path, err)
	}
	return s.Remove(id)
}
