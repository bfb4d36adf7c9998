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
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

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
// new file to wait for.

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
	// the original stays whole under that name until the entry is committed.
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

// newIncoming creates an incoming folder and locks it; the lock tells
// Recover in another process that the folder is being worked on.
func (s *Spool) newIncoming(id string) (string, func(), error) {
	tmp := filepath.Join(s.dir, incomingDir, id)
	if err := os.Mkdir(tmp, 0o750); err != nil {
		return "", nil, fmt.Errorf("spool: %w", err)
	}
	unlock, err := lockDir(tmp, true)
	if err != nil {
		os.Remove(tmp)
		return "", nil, err
	}
	return tmp, unlock, nil
}

// lockDir takes an exclusive flock on a folder; with wait=false it fails
// with unix.EWOULDBLOCK when another process holds it. The lock goes away
// with the process, so a crashed claimer never blocks recovery.
func lockDir(dir string, wait bool) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: lock %s: %w", dir, err)
	}
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
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
	if err := writeJSONSync(filepath.Join(tmp, originFile), o); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	data := filepath.Join(tmp, dataFile)
	err = os.Rename(src, data)
	if errors.Is(err, unix.EXDEV) {
		// The spool is on another filesystem: the atomic step is a rename to
		// a hidden name beside the file, and the copy is made from there.
		o.Claim = filepath.Join(filepath.Dir(src), ".dab-claim-"+m.ID)
		if err = writeJSONSync(filepath.Join(tmp, originFile), o); err == nil {
			err = os.Rename(src, o.Claim)
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
	s.endClaim(m.ID, o)
	return m, nil
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

// copyFile copies src to a new file dst and fsyncs it. It returns the
// SHA-256 of the bytes it read and src's file info.
func copyFile(src, dst string) (string, fs.FileInfo, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", nil, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", nil, err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", nil, err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return "", nil, fmt.Errorf("copy %s: %w", src, err)
	}
	return hex.EncodeToString(h.Sum(nil)), st, nil
}

// keepMetadata gives a copy its original's permissions and mtime, as mv does
// across filesystems: the file is the same file wherever dab puts it.
func keepMetadata(dst string, orig fs.FileInfo) error {
	if err := os.Chmod(dst, orig.Mode().Perm()); err != nil {
		return err
	}
	return os.Chtimes(dst, time.Time{}, orig.ModTime())
}

// copyVerified copies src to dst, fsyncs it, reads it back to check the copy
// has the bytes the source had, and gives it the source's mode and mtime.
func copyVerified(src, dst string) error {
	want, st, err := copyFile(src, dst)
	if err != nil {
		return err
	}
	got, _, err := hashFile(dst)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("copy of %s does not read back the same (sha256 %s): disk error?", src, got)
	}
	return keepMetadata(dst, st)
}

func hashFile(name string) (string, int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// finish hashes the claimed data, checks it did not change meanwhile (and,
// for a copy, that it reads back as sum), and commits the entry. want is the
// state data must have; a zero want.ModTime checks only that the size held.
func (s *Spool) finish(tmp, data string, m *Manifest, want FileState, sum string) error {
	f, err := os.Open(data)
	if err != nil {
		return err
	}
	h := sha256.New()
	sniff := &sniffer{}
	n, err := io.Copy(io.MultiWriter(h, sniff), f)
	if err == nil {
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
	// The origin note stays until the claim ends (endClaim): until the entry
	// is in place, it is what tells Recover that this folder holds a user's
	// file and not an abandoned stream; after, that the original of a copy
	// may still be beside Source.
	return s.commit(tmp, m)
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
	os.Remove(filepath.Join(s.dir, id, originFile))
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

// renameNoReplace renames like os.Rename but fails with fs.ErrExist instead
// of replacing an existing file.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: fs.ErrExist}
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// The filesystem cannot do it atomically: check, then rename.
		if _, serr := os.Lstat(to); serr == nil {
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: fs.ErrExist}
		}
		return os.Rename(from, to)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// Recovered says what Recover did with one unfinished incoming folder.
type Recovered struct {
	ID     string
	Action string // "returned", "committed", "removed"
	Path   string // where the file is now (returned: its drop path)
	Err    error
}

// Recover finishes or undoes what a crash left in the incoming folder:
// claimed files go back where they came from (or, when that is impossible,
// are committed as entries); streams that never completed are removed.
// Folders locked by a live process are left alone.
func (s *Spool) Recover() []Recovered {
	des, err := os.ReadDir(filepath.Join(s.dir, incomingDir))
	if err != nil {
		return []Recovered{{Action: "failed", Err: fmt.Errorf("spool: %w", err)}}
	}
	var out []Recovered
	for _, de := range des {
		tmp := filepath.Join(s.dir, incomingDir, de.Name())
		if !de.IsDir() {
			continue
		}
		if strings.HasSuffix(de.Name(), ".removing") {
			os.RemoveAll(tmp) // an interrupted Remove
			continue
		}
		unlock, err := lockDir(tmp, false)
		if err != nil {
			continue // in progress in a live process
		}
		r := s.recoverOne(tmp, de.Name())
		unlock()
		out = append(out, r)
	}
	return append(out, s.endClaims()...)
}

// endClaims ends the claims that a crash stopped between their commit and
// their end (endClaim): the entry is whole, and the original of a copy may
// still be beside its drop path under its claim name. It goes, unless it
// grew after it was copied (a writer dab could not see): then it goes back
// under its name, to be taken again, so that what was written last is not
// lost.
func (s *Spool) endClaims() []Recovered {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return []Recovered{{Action: "failed", Err: fmt.Errorf("spool: %w", err)}}
	}
	var out []Recovered
	for _, de := range des {
		if !de.IsDir() || !ValidID(de.Name()) {
			continue
		}
		dir := filepath.Join(s.dir, de.Name())
		b, err := os.ReadFile(filepath.Join(dir, originFile))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		unlock, lerr := lockDir(dir, false)
		if lerr != nil {
			continue // its claimer is alive and ending it
		}
		if r := s.endClaimOf(de.Name(), b, err); r.Action != "" {
			out = append(out, r)
		}
		unlock()
	}
	return out
}

func (s *Spool) endClaimOf(id string, note []byte, err error) Recovered {
	r := Recovered{ID: id}
	var o origin
	if err == nil {
		err = json.Unmarshal(note, &o)
	}
	if err != nil {
		r.Action, r.Err = "failed", fmt.Errorf("spool: recover entry %s: %w", id, err)
		return r
	}
	if _, err := os.Lstat(s.DataPath(id)); errors.Is(err, fs.ErrNotExist) {
		// A claim being undone (uncommit): the file went back already, or
		// is still whole under its claim name.
		r.Action, r.Path = "returned", o.Source
		if _, err := os.Lstat(o.Claim); o.Claim != "" && err == nil {
			r.Path, r.Err = returnFile(o.Claim, o.Source, id)
		}
		if r.Err == nil {
			r.Err = s.Remove(id)
		}
		return r
	}
	if o.Claim != "" {
		st, err := os.Lstat(o.Claim)
		if err == nil {
			m, err := s.Get(id)
			switch {
			case err != nil:
				r.Action, r.Err = "failed", err
			case st.Size() == m.Size:
				r.Action, r.Path, r.Err = "cleaned", o.Claim, os.Remove(o.Claim)
			default:
				r.Action = "returned"
				r.Path, r.Err = returnFile(o.Claim, o.Source, id)
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			r.Action, r.Err = "failed", err
		}
	}
	if r.Err == nil {
		os.Remove(filepath.Join(s.dir, id, originFile))
	}
	return r
}

func (s *Spool) recoverOne(tmp, id string) Recovered {
	r := Recovered{ID: id}
	b, err := os.ReadFile(filepath.Join(tmp, originFile))
	if errors.Is(err, fs.ErrNotExist) {
		// A stream (CLI, HTTP) that never finished: its producer reported
		// the failure and still has the bytes.
		r.Action, r.Err = "removed", os.RemoveAll(tmp)
		return r
	}
	var o origin
	if err == nil {
		err = json.Unmarshal(b, &o)
	}
	if err != nil {
		r.Action, r.Err = "failed", fmt.Errorf("spool: recover %s: %w", tmp, err)
		return r
	}
	data := filepath.Join(tmp, dataFile)
	if o.Claim != "" {
		if _, err := os.Lstat(o.Claim); err == nil {
			// Crossed filesystems and the copy may be partial: the original is
			// still whole under its claim name.
			os.Remove(data)
			r.Action = "returned"
			if r.Path, r.Err = returnFile(o.Claim, o.Source, id); r.Err == nil {
				os.RemoveAll(tmp)
			}
			return r
		}
	}
	if _, err := os.Lstat(data); errors.Is(err, fs.ErrNotExist) {
		// The crash came before the rename: the file never left.
		r.Action, r.Err = "removed", os.RemoveAll(tmp)
		return r
	}
	if r.Path, err = returnFile(data, o.Source, id); err == nil {
		r.Action = "returned"
		os.RemoveAll(tmp)
		return r
	}
	// It cannot go back (another filesystem, folder gone): finish the claim.
	m, merr := s.newManifest(Input{Type: o.Input.Type, Path: o.Input.Path, Metadata: o.Input.Metadata, Source: o.Input.Source})
	if merr != nil {
		r.Action, r.Err = "failed", merr
		return r
	}
	m.ID = id
	r.Action, r.Path = "committed", filepath.Join(s.dir, id)
	if r.Err = s.finish(tmp, data, m, FileState{}, ""); r.Err == nil {
		s.endClaim(id, &o)
	}
	return r
}

// MoveOut moves an entry's file to root/<type>/<path> (see MoveFile) and
// removes the entry. It returns where the file went. Used for the done
// archive and the failed folder.
func (s *Spool) MoveOut(id, root string) (string, error) {
	m, err := s.Get(id)
	if err != nil {
		return "", err
	}
	target, err := MoveFile(filepath.Join(s.dir, id, dataFile), filepath.Join(root, m.Type, filepath.FromSlash(m.Path)))
	if err != nil {
		return "", fmt.Errorf("spool: move entry %s out: %w", id, err)
	}
	if err := s.Remove(id); err != nil {
		return target, err
	}
	return target, nil
}

// MoveFile moves src to dst, creating dst's folder, never replacing a file:
// when dst is taken it uses dst.1, dst.2, ... Across filesystems it copies,
// checks the copy and removes src. It returns the path used.
func MoveFile(src, dst string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return "", err
	}
	target := dst
	var err error
	for i := 1; ; i++ {
		err = renameNoReplace(src, target)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
		target = dst + "." + strconv.Itoa(i)
	}
	if errors.Is(err, unix.EXDEV) {
		if err = copyVerified(src, target); err == nil {
			err = os.Remove(src)
		}
	}
	if err != nil {
		return "", err
	}
	return target, nil
}

// FailureNote is written as <file>.error.json beside a file in the failed
// folder: what the file was, what went wrong, how to retry.
type FailureNote struct {
	File      string    `json:"file"`
	Type      string    `json:"type,omitempty"`
	Path      string    `json:"path,omitempty"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256,omitempty"`
	Source    string    `json:"source,omitempty"`
	Failure   Failure   `json:"failure"`
	Retry     string    `json:"retry"`
	SpooledAt time.Time `json:"spooled_at,omitzero"`
}

// RetryHint is the Retry text of every failure note.
const RetryHint = "fix the cause, then put the file back into the drop folder (or upload it again)"

// WriteFailureNote writes n as file.error.json.
func WriteFailureNote(file string, n FailureNote) error {
	if n.Failure.At.IsZero() {
		n.Failure.At = time.Now().UTC()
	}
	n.File = filepath.Base(file)
	if n.Retry == "" {
		n.Retry = RetryHint
	}
	return writeJSONSync(file+".error.json", n)
}

// FailOut moves an entry's file into the failed folder root and writes
// <file>.error.json beside it with the reason and the fix.
func (s *Spool) FailOut(id, root string, f Failure) (string, error) {
	m, err := s.Get(id)
	if err != nil {
		return "", err
	}
	target, err := s.MoveOut(id, root)
	if err != nil {
		return target, err
	}
	return target, WriteFailureNote(target, FailureNote{
		Type: m.Type, Path: m.Path, Size: m.Size, SHA256: m.SHA256, Source: m.Source, Failure: f, SpooledAt: m.CreatedAt,
	})
}

// Return gives an entry's file back to path (where a watcher claimed it
// from) and removes the entry. It never replaces a file: when path is taken
// it returns fs.ErrExist and the entry stays.
func (s *Spool) Return(id, path string) error {
	if _, err := s.entryDir(id); err != nil {
		return err
	}
	if err := renameNoReplace(filepath.Join(s.dir, id, dataFile), path); err != nil {
		return fmt.Errorf("spool: return entry %s to %s: %w", id, path, err)
	}
	return s.Remove(id)
}
