// Entries whose upload failed for good, and moving files out of the spool:
// the failure mark kept beside an entry (failed.json), the failure note
// written beside a file in the failed folder (<file>.error.json), and the
// moves into the failed folder and the done archive, which never replace a
// file that is already there.

package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
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

// ClearFailed removes a failure mark, before an operator's re-run.
func (s *Spool) ClearFailed(id string) error {
	dir, err := s.entryDir(id)
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, failedFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// Failed returns an entry's failure mark, or nil when it has none.
func (s *Spool) Failed(id string) (*Failure, error) {
	dir, err := s.entryDir(id)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, failedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var f Failure
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("spool: failure mark of %s is damaged: %w", id, err)
	}
	return &f, nil
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
