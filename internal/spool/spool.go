// Package spool is the one hand-off point between intake (CLI, drop folder,
// HTTP) and the workers. A spool entry is a folder holding the file's bytes and
// a manifest; it appears atomically (built under .incoming, then renamed) so a
// worker never sees half an entry, and it is removed only after the upload is
// verified and the asset record committed.
//
// Layout:
//
//	<dir>/<id>/data            the bytes, fsynced
//	<dir>/<id>/manifest.json   name, type, path, size, sha256, time, ...
//	<dir>/<id>/failed.json     present when the upload failed for good
//	<dir>/<id>/upload-id       the multipart upload in progress, if any
//	<dir>/<id>/origin.json     where a claimed file came from, until its claim ends
//	<dir>/.incoming/<id>/      entries being written or claimed
//	<dir>/.free/<id>/          folders of removed entries, for new ones (recycle.go)
package spool

// This file holds the Spool itself and the names of its folders and files.
// What an entry is lives in entry.go; how one is written, claimed, recovered,
// failed and moved out, in writer.go, claim.go (claim_batch.go for many at
// once), recover.go and failed.go; streams committed together in
// groupcommit.go; removed entries' folders reused in recycle.go; the
// multipart upload state in uploadstate.go; free space in space.go; the check
// for open writers in openwriters_*.go; the durable file operations they all
// share, in files.go.

import (
	"fmt"
	"os"
	"path/filepath"
)

const (
	dataFile     = "data"
	manifestFile = "manifest.json"
	failedFile   = "failed.json"
	incomingDir  = ".incoming"
)

// Spool is a folder of entries.
type Spool struct {
	dir string
	// openForWriting is openForWriting; tests replace it to act as a system
	// where open writers cannot be seen.
	openForWriting func(path string) bool
	// keepOriginals: a claim across filesystems keeps the original under
	// its claim name until the entry ends (see Claim). Off for a spool that
	// workers on other hosts share (SetShared): they cannot see the drop
	// folder, so the claim ends at once, as it did before.
	keepOriginals bool
	// crashPoint, when tests set it, is called at named steps (a test
	// panics there to act as a crash).
	crashPoint func(step string)
	// free is what this process knows of the recycled folders (recycle.go).
	free freeFolders
	// commits gathers the commits of streams (groupcommit.go).
	commits commitGroup
	// fsErrs is the spool folder, open from Open on: the descriptor
	// batches sync the filesystem through (see syncFS).
	fsErrs *os.File
}

// Open creates the spool folder if needed.
func Open(dir string) (*Spool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	for _, sub := range []string{incomingDir, freeDir} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o750); err != nil {
			return nil, fmt.Errorf("spool: create %s: %w", abs, err)
		}
	}
	fsErrs, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return &Spool{dir: abs, openForWriting: openForWriting, keepOriginals: true, fsErrs: fsErrs}, nil
}

// SetShared says that workers on other hosts share the spool
// (DAB_SPOOL_SHARED): a claim across filesystems then removes the original
// as soon as its copy is committed, since whoever ends the entry may not see
// the drop folder.
func (s *Spool) SetShared(shared bool) { s.keepOriginals = !shared }

// crash calls the test's crash point at step, if any.
func (s *Spool) crash(step string) {
	if s.crashPoint != nil {
		s.crashPoint(step)
	}
}

// Dir is the spool's folder.
func (s *Spool) Dir() string { return s.dir }
