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
//	<dir>/.incoming/<id>/      entries being written
package spool

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/naming"
)

// Errors callers branch on.
var (
	// ErrNotFound means no spool entry has the given ID.
	ErrNotFound = errors.New("spool entry not found")
	// ErrDataChanged means an entry's file is no longer what its manifest
	// describes: typically a writer that kept the file open (unseen, see
	// Claim) wrote more after it was taken. Uploading the manifest's bytes
	// would drop the rest; the entry must go to the failed folder whole.
	ErrDataChanged = errors.New("spool entry's file changed after it was taken")
)

const (
	dataFile     = "data"
	manifestFile = "manifest.json"
	failedFile   = "failed.json"
	incomingDir  = ".incoming"
)

// Manifest describes a spooled file.
type Manifest struct {
	ID string `json:"id"`
	// Name is the file's base name as the producer gave it.
	Name string `json:"name"`
	// Type is the asset type (a registered plugin type).
	Type string `json:"type"`
	// Path is the file's path relative to its type folder; the S3 key is Type/Path.
	Path        string            `json:"path"`
	Size        int64             `json:"size"`
	SHA256      string            `json:"sha256"`
	ContentType string            `json:"content_type"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// Source names the producer: cli, watcher, http.
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
}

// Key is the S3 object key of the entry.
func (m *Manifest) Key() string { return m.Type + "/" + m.Path }

// Failure is written beside an entry whose upload failed for good.
type Failure struct {
	Code    string    `json:"code"`
	Message string    `json:"message"`
	TaskID  string    `json:"task_id,omitempty"`
	At      time.Time `json:"at"`
}

// Spool is a folder of entries.
type Spool struct {
	dir string
	// openForWriting is openForWriting; tests replace it to act as a system
	// where open writers cannot be seen.
	openForWriting func(path string) bool
}

// Open creates the spool folder if needed.
func Open(dir string) (*Spool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(abs, incomingDir), 0o750); err != nil {
		return nil, fmt.Errorf("spool: create %s: %w", abs, err)
	}
	return &Spool{dir: abs, openForWriting: openForWriting}, nil
}

// Dir is the spool's folder.
func (s *Spool) Dir() string { return s.dir }

// Input is what a producer knows about a file before spooling it.
type Input struct {
	Type     string
	Path     string // relative to the type folder, slash-separated
	Metadata map[string]string
	Source   string
	// Progress, when set, is called with the running byte count while copying.
	Progress func(written int64)
}

// NewID returns a new entry ID: 12 hex digits of milliseconds (so IDs sort by
// time) and 16 random hex digits.
func NewID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("spool: crypto/rand failed: %v", err)) // never happens on Linux
	}
	return fmt.Sprintf("%012x%s", time.Now().UnixMilli(), hex.EncodeToString(b[:]))
}

var idPattern = regexp.MustCompile(`^[0-9a-f]{28}$`)

// ValidID reports whether id has the form NewID produces; it keeps IDs from
// outside (task payloads) from naming paths outside the spool.
func ValidID(id string) bool { return idPattern.MatchString(id) }

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
	f, err := os.OpenFile(filepath.Join(tmp, dataFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
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
	err = w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		w.Abort()
		return nil, fmt.Errorf("spool: write %s: %w", m.Name, err)
	}
	m.Size, m.SHA256, m.ContentType = w.n, hex.EncodeToString(w.h.Sum(nil)), contentType(m.Name, w.sniff.buf)
	if err := w.s.commit(w.tmp, m); err != nil {
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

func (s *Spool) newManifest(in Input) (*Manifest, error) {
	if err := naming.ValidateType(in.Type); err != nil {
		return nil, err
	}
	p, err := naming.CleanPath(in.Path)
	if err != nil {
		return nil, err
	}
	if _, err := naming.Key(in.Type, p); err != nil {
		return nil, err
	}
	if err := naming.CheckMetadata(in.Metadata); err != nil {
		return nil, err
	}
	if p, ok := in.Metadata[asset.PriceMetadata]; ok {
		if _, err := asset.ParsePrice(p); err != nil {
			return nil, err
		}
	}
	return &Manifest{
		ID: NewID(), Name: path.Base(p), Type: in.Type, Path: p,
		Metadata: in.Metadata, Source: in.Source, CreatedAt: time.Now().UTC(),
	}, nil
}

// commit writes the manifest into tmp and renames tmp into place.
func (s *Spool) commit(tmp string, m *Manifest) error {
	if err := writeJSONSync(filepath.Join(tmp, manifestFile), m); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, m.ID)); err != nil {
		return fmt.Errorf("spool: commit %s: %w", m.ID, err)
	}
	return syncDir(s.dir)
}

func (s *Spool) entryDir(id string) (string, error) {
	if !ValidID(id) {
		return "", fmt.Errorf("spool: %q is not a spool entry ID: %w", id, ErrNotFound)
	}
	return filepath.Join(s.dir, id), nil
}

// Get reads an entry's manifest.
func (s *Spool) Get(id string) (*Manifest, error) {
	dir, err := s.entryDir(id)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("spool: entry %s in %s: %w", id, s.dir, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("spool: manifest of %s is damaged: %w", id, err)
	}
	return &m, nil
}

// Open returns an entry's data file for reading, with its manifest. An entry
// whose file has grown or shrunk since it was spooled is refused with
// ErrDataChanged; the manifest is returned with that error so that the caller
// can move the entry out (FailOut) with the reason.
func (s *Spool) Open(id string) (*os.File, *Manifest, error) {
	m, err := s.Get(id)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(filepath.Join(s.dir, id, dataFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("spool: data of entry %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("spool: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("spool: %w", err)
	}
	if st.Size() != m.Size {
		f.Close()
		return nil, m, fmt.Errorf("spool: entry %s (%s): its file has %d bytes, the manifest says %d: a writer kept writing after dab took the file, which must be taken again whole: %w",
			id, m.Key(), st.Size(), m.Size, ErrDataChanged)
	}
	return f, m, nil
}

// DataPath is where an entry's bytes are.
func (s *Spool) DataPath(id string) string { return filepath.Join(s.dir, id, dataFile) }

// Remove deletes an entry. Removing a missing entry is not an error, so a
// re-run task can call it again.
func (s *Spool) Remove(id string) error {
	dir, err := s.entryDir(id)
	if err != nil {
		return err
	}
	// Rename first so a crash mid-delete never leaves a half entry that looks whole.
	trash := filepath.Join(s.dir, incomingDir, id+".removing")
	if err := os.Rename(dir, trash); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	return syncDir(s.dir)
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

// List returns the manifests of all entries, oldest first.
func (s *Spool) List() ([]*Manifest, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var out []*Manifest
	for _, de := range des {
		if !de.IsDir() || !ValidID(de.Name()) {
			continue
		}
		m, err := s.Get(de.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func writeJSONSync(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return writeFileSync(name, append(b, '\n'))
}

// writeFileSync replaces name with data durably: write a temporary file,
// fsync it, rename it over name.
func writeFileSync(name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: write %s: %w", filepath.Base(name), err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: sync %s: %w", dir, err)
	}
	return nil
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

// uploadIDFile holds the ID of an entry's multipart upload in progress.
const uploadIDFile = "upload-id"

// UploadMark remembers an entry's multipart upload across task attempts and
// worker crashes (it implements storage.UploadState).
type UploadMark struct {
	path string
}

// UploadMark returns the upload mark of an entry.
func (s *Spool) UploadMark(id string) *UploadMark {
	return &UploadMark{path: filepath.Join(s.dir, id, uploadIDFile)}
}

// LoadUploadID returns the saved upload ID or "".
func (u *UploadMark) LoadUploadID() (string, error) {
	b, err := os.ReadFile(u.path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// SaveUploadID records the upload ID, durably.
func (u *UploadMark) SaveUploadID(id string) error {
	return writeFileSync(u.path, []byte(id+"\n"))
}

// ClearUploadID forgets the upload.
func (u *UploadMark) ClearUploadID() error {
	if err := os.Remove(u.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}
