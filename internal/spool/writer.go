// Writing a new entry from a stream (CLI, HTTP): bytes go into a locked
// folder under .incoming, hashed on the way, and the entry becomes visible
// only at Commit, by one rename. Claim (claim.go) uses the same incoming
// folder, lock and commit.

package spool

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Put streams r into a new entry, computing size and SHA-256 on the way, and
// makes it visible only once bytes and manifest are on disk.
func (s *Spool) Put(r io.Reader, in Input) (*Manifest, error) {
	// Check the names before reading any bytes.
	if _, err := s.newManifest(in); err != nil {
		return nil, err
	}
	w, err := s.Create()
	if err != nil {
		return nil, err
	}
	defer w.Abort()
	var dst io.Writer = w
	if in.Progress != nil {
		dst = io.MultiWriter(w, &progressWriter{report: in.Progress})
	}
	if _, err := io.Copy(dst, r); err != nil {
		return nil, fmt.Errorf("spool: write %s: %w", in.Path, err)
	}
	return w.Commit(in)
}

// Writer streams bytes into a new entry whose names may not be known yet
// (an HTTP form can send the file before its type). Nothing is visible until
// Commit; Abort (safe after Commit) removes what was written.
type Writer struct {
	s       *Spool
	id, tmp string
	f       *os.File
	h       hash.Hash
	sniff   sniffer
	n       int64
	unlock  func()
	done    bool
}

// Create starts a new entry.
func (s *Spool) Create() (*Writer, error) {
	id := NewID()
	tmp, unlock, err := s.newIncoming(id)
	if err != nil {
		return nil, err
	}
	f, err := openFile(filepath.Join(tmp, dataFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		unlock()
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("spool: %w", err)
	}
	return &Writer{s: s, id: id, tmp: tmp, f: f, h: sha256.New(), unlock: unlock}, nil
}

// Write appends to the entry's bytes.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.sniff.Write(p[:n])
	w.n += int64(n)
	return n, err
}

// Written is the number of bytes written so far.
func (w *Writer) Written() int64 { return w.n }

// Commit fsyncs the bytes, writes the manifest for in and makes the entry
// visible. Bad names (in.Type, in.Path) are refused and the entry removed.
func (w *Writer) Commit(in Input) (*Manifest, error) {
	if w.done {
		return nil, errors.New("spool: entry already committed or aborted")
	}
	m, err := w.s.newManifest(in)
	if err != nil {
		w.Abort()
		return nil, err
	}
	m.ID = w.id
	m.Size, m.SHA256, m.ContentType = w.n, hex.EncodeToString(w.h.Sum(nil)), contentType(m.Name, w.sniff.buf)
	err = w.s.commitStream(w.tmp, w.f, m) // closes w.f
	if err != nil {
		w.Abort()
		return nil, err
	}
	w.done = true
	w.unlock()
	return m, nil
}

// Abort drops an uncommitted entry; after Commit it does nothing.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.RemoveAll(w.tmp)
	w.unlock()
}

// newIncoming makes an incoming folder, a recycled one when there is one
// (recycle.go), and locks it; the lock tells Recover in another process
// that the folder is being worked on.
func (s *Spool) newIncoming(id string) (string, func(), error) {
	tmp := filepath.Join(s.dir, incomingDir, id)
	if unlock, ok := s.takeFree(tmp); ok {
		return tmp, unlock, nil
	}
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
	f, err := openFD(dir, unix.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("spool: lock %s: %w", dir, err)
	}
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	for {
		err := unix.Flock(int(f), how)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		// Once only: a second close of a bare descriptor would close
		// whatever file took its number meanwhile.
		var once sync.Once
		return func() { once.Do(func() { f.Close() }) }, nil
	}
}

// commit writes the manifest into tmp and renames tmp into place.
func (s *Spool) commit(tmp string, m *Manifest) error {
	if err := writeJSONInPlaceSync(filepath.Join(tmp, manifestFile), m); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if err := renameNoReplace(tmp, filepath.Join(s.dir, m.ID)); err != nil {
		return fmt.Errorf("spool: commit %s: %w", m.ID, err)
	}
	return syncDir(s.dir)
}

// sniffer keeps the first 512 bytes for content type detection.
type sniffer struct{ buf []byte }

func (s *sniffer) Write(p []byte) (int, error) {
	if room := 512 - len(s.buf); room > 0 {
		s.buf = append(s.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func contentType(name string, head []byte) string {
	if t := mime.TypeByExtension(strings.ToLower(path.Ext(name))); t != "" {
		return t
	}
	return http.DetectContentType(head)
}

// progressWriter adapts a callback to io.Writer, reporting the running total.
type progressWriter struct {
	total  int64
	report func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.total += int64(len(b))
	p.report(p.total)
	return len(b), nil
}
