// Entries whose upload failed for good, and moving files out of the spool:
// the failure mark kept beside an entry (MarkFailed, FailureMark:
// failed.json), the failure note written beside a file in the failed folder
// (<file>.error.json), and the moves into the failed folder (Reject,
// RejectFile) and the done archive (Archive), which never replace a file that
// is already there.

package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/dab-assets/dab/internal/naming"
)

// Failure is written beside an entry whose upload failed for good.
type Failure struct {
	Code    string    `json:"code"`
	Message string    `json:"message"`
	TaskID  string    `json:"task_id,omitempty"`
	At      time.Time `json:"at"`
}

// MarkFailed records why an entry's upload failed for good; the entry stays.
func (s *Spool) MarkFailed(id string, f Failure) error {
	dir, err := s.entryDir(id)
	if err != nil {
		return err
	}
	if f.At.IsZero() {
		f.At = time.Now().UTC()
	}
	return writeJSONSync(filepath.Join(dir, failedFile), f)
}

// FailureMark returns an entry's failure mark (see MarkFailed); ok is false
// when the entry has none, or when the mark cannot be read (err says why).
func (s *Spool) FailureMark(id string) (f Failure, ok bool, err error) {
	dir, err := s.entryDir(id)
	if err != nil {
		return Failure{}, false, err
	}
	b, err := os.ReadFile(filepath.Join(dir, failedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Failure{}, false, nil
	}
	if err != nil {
		return Failure{}, false, fmt.Errorf("spool: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return Failure{}, false, fmt.Errorf("spool: failure mark of %s is damaged: %w", id, err)
	}
	return f, true, nil
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

// writeFailureNote writes n as file.error.json.
func writeFailureNote(file string, n FailureNote) error {
	if n.Failure.At.IsZero() {
		n.Failure.At = time.Now().UTC()
	}
	n.File = filepath.Base(file)
	if n.Retry == "" {
		n.Retry = RetryHint
	}
	return writeJSONSync(file+".error.json", n)
}

// RejectFile moves src into the failed folder root, to root/<n.Type>/<n.Path>
// (see moveFile: it never replaces a file), and writes n beside it as
// <file>.error.json with the reason and the fix. A file name too long for
// its note to fit beside it (a drop-folder name of 241 to 255 bytes, or a
// name that a ".1" for a name taken already makes too long) is shortened in
// the failed folder, keeping its extension; the note's path keeps the name
// the file had. It returns where the file went. When the move fails it
// returns "" and the move's error (which wraps fs.ErrNotExist when src is
// gone); when only the note cannot be written, the file's new path and that
// error.
func RejectFile(src, root string, n FailureNote) (string, error) {
	dst, err := placeUnder(root, n.Type, n.Path)
	if err != nil {
		return "", err
	}
	target, err := moveFile(src, dst, naming.MaxFileNameBytes)
	if err != nil {
		return "", err
	}
	return target, writeFailureNote(target, n)
}

// Reject moves an entry's file into the failed folder root (see RejectFile),
// with <file>.error.json beside it saying what the file was, why it failed
// (f) and how to retry, and removes the entry. For an entry claimed across
// filesystems whose original is kept (see Claim), the original goes: it
// holds every byte, those written after the copy too. It returns where the
// file went.
func (s *Spool) Reject(id, root string, f Failure) (string, error) {
	m, err := s.Get(id)
	if err != nil {
		return "", err
	}
	src := s.DataPath(id)
	if o, _, ok := s.keptOriginal(id); ok {
		// Claimed across filesystems: the original holds every byte,
		// those written after the copy too.
		src = o.Claim
	}
	target, err := RejectFile(src, root, FailureNote{
		Type: m.Type, Path: m.Path, Size: m.Size, SHA256: m.SHA256, Source: m.Source, Failure: f, SpooledAt: m.CreatedAt,
	})
	if target == "" {
		return "", fmt.Errorf("spool: move entry %s out: %w", id, err)
	}
	if rerr := s.Remove(id); rerr != nil {
		return target, rerr
	}
	return target, err
}

// Archive moves an entry's file into the done archive root, to
// root/<type>/<path> (see moveFile), and removes the entry. It returns where
// the file went.
func (s *Spool) Archive(id, root string) (string, error) {
	m, err := s.Get(id)
	if err != nil {
		return "", err
	}
	// A kept original (see Claim) ends before the copy leaves the entry:
	// a crash after the move would leave an entry without its data beside
	// its original, which Recover takes for a claim being undone, and the
	// original would go back to the drop folder to be uploaded again.
	if err := s.endKept(id); err != nil {
		return "", fmt.Errorf("spool: archive %s: %w", id, err)
	}
	dst, err := placeUnder(root, m.Type, m.Path)
	if err != nil {
		return "", fmt.Errorf("spool: archive %s: %w", id, err)
	}
	target, err := moveFile(s.DataPath(id), dst, naming.MaxSegmentBytes)
	if err != nil {
		return "", fmt.Errorf("spool: move entry %s out: %w", id, err)
	}
	s.crash("archive.moved")
	if err := s.Remove(id); err != nil {
		return target, err
	}
	return target, nil
}

// RejectedFile is where a run of task taskID moved a file of type typ and
// path p into the failed folder root (Reject), as the note beside it says;
// "" when no note there names that task. It looks at the file's place and
// at the numbered names moveFile gives when that is taken.
func RejectedFile(root, typ, p, taskID string) string {
	dst, err := placeUnder(root, typ, p)
	if err != nil || taskID == "" {
		return ""
	}
	for i := 0; i <= 9; i++ {
		name := dst
		if i > 0 {
			name += "." + strconv.Itoa(i)
		}
		b, err := readFile(name + ".error.json")
		var n FailureNote
		if err == nil && json.Unmarshal(b, &n) == nil && n.Failure.TaskID == taskID {
			return name
		}
	}
	return ""
}

// placeUnder is root/<typ>/<p>, the place of a file of type typ and path p
// in the failed or done folder root. A type or path that would leave root
// ("..", an absolute path: a manifest dab did not write) is refused.
func placeUnder(root, typ, p string) (string, error) {
	dst := filepath.Join(root, typ, filepath.FromSlash(p))
	if typ == "" || p == "" || !strings.HasPrefix(dst, filepath.Clean(root)+string(filepath.Separator)+typ+string(filepath.Separator)) {
		return "", fmt.Errorf("spool: type %q and path %q name no place under %s: %w", typ, p, root, naming.ErrInvalid)
	}
	return dst, nil
}

// moveFile moves src to dst, creating dst's folder, never replacing a file:
// when dst is taken it uses dst.1, dst.2, ... The file name it uses is at
// most maxName bytes (shortened by fitName). Across filesystems it copies,
// checks the copy and removes src. It returns the path used.
func moveFile(src, dst string, maxName int) (string, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return "", err
	}
	dir, base := filepath.Split(dst)
	target := filepath.Join(dir, fitName(base, maxName))
	var err error
	for i := 1; ; i++ {
		err = renameNoReplace(src, target)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
		suffix := "." + strconv.Itoa(i)
		target = filepath.Join(dir, fitName(base, maxName-len(suffix))+suffix)
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

// fitName shortens a file name to at most max bytes, cutting the part
// before its extension (at a character boundary) and keeping a short
// extension, so that the file still opens with the right program.
func fitName(name string, max int) string {
	if len(name) <= max {
		return name
	}
	ext := filepath.Ext(name)
	if len(ext) > 16 || len(ext) == len(name) {
		ext = ""
	}
	cut := max - len(ext)
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut] + ext
}
