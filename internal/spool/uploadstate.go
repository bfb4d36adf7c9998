// The upload state: the ID of an entry's multipart upload in progress, kept
// in the entry's folder so that a retried task or a restarted worker resumes
// (or aborts) the same upload instead of leaving parts behind in S3.

package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// uploadIDFile holds the ID of an entry's multipart upload in progress.
const uploadIDFile = "upload-id"

// UploadState remembers an entry's multipart upload across task attempts and
// worker crashes (it implements storage.UploadState).
type UploadState struct {
	path string
}

// UploadState returns the upload state of an entry.
func (s *Spool) UploadState(id string) *UploadState {
	return &UploadState{path: filepath.Join(s.dir, id, uploadIDFile)}
}

// LoadUploadID returns the saved upload ID or "".
func (u *UploadState) LoadUploadID() (string, error) {
	b, err := readFile(u.path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// SaveUploadID records the upload ID, durably.
func (u *UploadState) SaveUploadID(id string) error {
	return writeFileSync(u.path, []byte(id+"\n"))
}

// ClearUploadID forgets the upload.
func (u *UploadState) ClearUploadID() error {
	if err := os.Remove(u.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}
