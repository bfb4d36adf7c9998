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

// Claim errors callers branch on.
var (
	// ErrGone: the file was no longer there (another watcher took it, or it
	// was deleted).
	ErrGone = errors.New("file is gone")
	// ErrChanging: the file changed while it was being claimed; it was put
	// back and should be looked at again later.
	ErrChanging = errors.New("file changed while being claimed")
)

const originFile = "origin.json"

// origin records where a claimed file came from, for recovery.
type origin struct {
	// Source is the path the file had in the drop folder.
	Source string `json:"source"`
	// Claim is the hidden name the file was renamed to next to Source when
	// the spool is on another filesystem (the copy is made from there).
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
// hashed, is put back and ErrChanging returned.
func (s *Spool) Claim(src string, in Input, seen FileState) (*Manifest, error) {
	m, err := s.newManifest(in)
	if err != nil {
		return nil, err
	}
	tmp, unlock, err := s.newIncoming(m.ID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var o origin
	o.Source = src
	o.Input.Type, o.Input.Path, o.Input.Metadata, o.Input.Source = in.Type, m.Path, in.Metadata, in.Source
	if err := writeJSONSync(filepath.Join(tmp, originFile), o); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	data := filepath.Join(tmp, dataFile)
	err = os.Rename(src, data)
	if errors.Is(err, unix.EXDEV) {
		err = s.claimAcross(tmp, &o, data)
	}
	if errors.Is(err, fs.ErrNotExist) {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("spool: claim %s: %w", src, ErrGone)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("spool: claim %s: %w", src, err)
	}
	if st, err := os.Lstat(data); err != nil || !st.Mode().IsRegular() || st.Size() != seen.Size || !st.ModTime().Equal(seen.ModTime) {
		return nil, s.putBack(tmp, data, src, ErrChanging)
	}
	if err := s.finish(tmp, data, m, seen); err != nil {
		return nil, s.putBack(tmp, data, src, err)
	}
	return m, nil
}

// claimAcross claims a file on another filesystem than the spool: rename it
// to a hidden name beside itself (the atomic step), copy it in with fsync,
// check the copy, then remove the original.
func (s *Spool) claimAcross(tmp string, o *origin, data string) error {
	o.Claim = filepath.Join(filepath.Dir(o.Source), ".dab-claim-"+filepath.Base(tmp))
	if err := writeJSONSync(filepath.Join(tmp, originFile), o); err != nil {
		return err
	}
	if err := os.Rename(o.Source, o.Claim); err != nil {
		return err
	}
	if err := copyVerified(o.Claim, data); err != nil {
		// Undo: the original goes back under its name.
		if rerr := renameNoReplace(o.Claim, o.Source); rerr != nil {
			return fmt.Errorf("%w (and putting it back failed: %v; the file is at %s)", err, rerr, o.Claim)
		}
		return err
	}
	return os.Remove(o.Claim)
}

// copyVerified copies src to dst, fsyncs it and reads it back to check the
// copy has the bytes the source had.
func copyVerified(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
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
		return fmt.Errorf("copy %s: %w", src, err)
	}
	got, _, err := hashFile(dst)
	if err != nil {
		return err
	}
	if got != hex.EncodeToString(h.Sum(nil)) {
		return fmt.Errorf("copy of %s does not read back the same (sha256 %s): disk error?", src, got)
	}
	return nil
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

// finish hashes the claimed data, checks it did not change meanwhile, and
// commits the entry.
func (s *Spool) finish(tmp, data string, m *Manifest, seen FileState) error {
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
	if st, err := os.Stat(data); err != nil || st.Size() != n || (!seen.ModTime.IsZero() && !st.ModTime().Equal(seen.ModTime)) {
		return ErrChanging
	}
	m.Size, m.SHA256, m.ContentType = n, hex.EncodeToString(h.Sum(nil)), contentType(m.Name, sniff.buf)
	// The origin note goes only after the commit: until the entry is in
	// place, the note is what tells Recover that this folder holds a
	// user's file and not an abandoned stream.
	if err := s.commit(tmp, m); err != nil {
		return err
	}
	os.Remove(filepath.Join(s.dir, m.ID, originFile))
	return nil
}

// putBack returns a claimed file to where it came from, without replacing a
// file that appeared there meanwhile (then it keeps both: the claimed one
// goes next to it with a suffix).
func (s *Spool) putBack(tmp, data, src string, cause error) error {
	err := renameNoReplace(data, src)
	if errors.Is(err, fs.ErrExist) {
		alt := src + ".dab-returned-" + filepath.Base(tmp)
		err = renameNoReplace(data, alt)
	}
	if errors.Is(err, unix.EXDEV) {
		// The spool is on another filesystem: copy back, then drop ours.
		if err = copyVerified(data, src); err == nil {
			err = os.Remove(data)
		}
	}
	if err != nil {
		return fmt.Errorf("spool: claim of %s failed (%w) and the file could not be put back: it is at %s: %v", src, cause, data, err)
	}
	os.RemoveAll(tmp)
	return fmt.Errorf("spool: claim %s: %w", src, cause)
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
	return out
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
			r.Action, r.Path = "returned", o.Source
			r.Err = renameNoReplace(o.Claim, o.Source)
			if errors.Is(r.Err, fs.ErrExist) {
				r.Path = o.Source + ".dab-returned-" + id
				r.Err = renameNoReplace(o.Claim, r.Path)
			}
			if r.Err == nil {
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
	err = renameNoReplace(data, o.Source)
	if errors.Is(err, fs.ErrExist) {
		r.Path = o.Source + ".dab-returned-" + id
		err = renameNoReplace(data, r.Path)
	} else {
		r.Path = o.Source
	}
	if err == nil {
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
	r.Err = s.finish(tmp, data, m, FileState{})
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
