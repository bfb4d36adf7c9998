// An entry: its ID, its manifest and the names a producer gives it (Input,
// checked once by newManifest for the writer and the claim alike), and
// reading, listing and removing entries in place. An entry appears by one
// rename, so everything here sees only whole entries.

package spool

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
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

	// noOrigin: OpenData found no origin note in the entry. None appears
	// later (a claim writes its note before the entry is committed), so
	// RemoveOpened does not look for one again.
	noOrigin bool
}

// Key is the S3 object key of the entry.
func (m *Manifest) Key() string { return m.Type + "/" + m.Path }

// Input is what a producer knows about a file before spooling it.
type Input struct {
	Type     string
	Path     string // relative to the type folder, slash-separated
	Metadata map[string]string
	Source   string
	// Progress, when set, is called with the running byte count while copying.
	Progress func(written int64)
}

// CheckInput says whether in can be spooled: its type and path make a
// valid S3 key (package naming's rules, the same for every intake), its
// metadata uses no name dab records itself, and its price, if any, is a
// whole number of credits. Errors wrap naming.ErrInvalid or
// asset.ErrBadPrice. Producers call it to refuse a name before reading any
// byte; the spool calls it again for every entry it makes.
func CheckInput(in Input) error {
	_, err := checkInput(in)
	return err
}

// checkInput is CheckInput, returning the cleaned path.
func checkInput(in Input) (string, error) {
	key, err := naming.Key(in.Type, in.Path)
	if err != nil {
		return "", err
	}
	if err := naming.CheckMetadata(in.Metadata); err != nil {
		return "", err
	}
	if p, ok := in.Metadata[asset.PriceMetadata]; ok {
		if _, err := asset.ParsePrice(p); err != nil {
			return "", err
		}
	}
	return strings.TrimPrefix(key, in.Type+"/"), nil
}

func (s *Spool) newManifest(in Input) (*Manifest, error) {
	p, err := checkInput(in)
	if err != nil {
		return nil, err
	}
	return &Manifest{
		ID: NewID(), Name: path.Base(p), Type: in.Type, Path: p,
		Metadata: in.Metadata, Source: in.Source, CreatedAt: time.Now().UTC(),
	}, nil
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
	b, err := readFile(filepath.Join(dir, manifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("spool: entry %s in %s: %w", id, s.dir, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("spool: manifest of %s is damaged (%w): its file is %s; move it into the drop folder to bank it again, then delete %s", id, err, filepath.Join(dir, dataFile), dir)
	}
	return &m, nil
}

// OpenData returns an entry's data file (DataPath) for reading, with its
// manifest. An entry whose file has grown or shrunk since it was spooled is
// refused with ErrDataChanged; the manifest is returned with that error so
// that the caller can move the entry out (Reject) with the reason.
func (s *Spool) OpenData(id string) (*os.File, *Manifest, error) {
	m, err := s.Get(id)
	if err != nil {
		return nil, nil, err
	}
	f, err := openRead(filepath.Join(s.dir, id, dataFile))
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
	_, ost, kept, noted := s.keptOriginalNoted(id)
	m.noOrigin = !noted
	if kept && ost.Size() != m.Size {
		// Claimed across filesystems: the writer wrote into the original,
		// which is kept until the entry ends.
		f.Close()
		return nil, m, fmt.Errorf("spool: entry %s (%s): the file it was copied from has %d bytes, the copy %d: a writer kept writing after dab took the file, which must be taken again whole: %w",
			id, m.Key(), ost.Size(), m.Size, ErrDataChanged)
	}
	return f, m, nil
}

// DataPath is where an entry's bytes are.
func (s *Spool) DataPath(id string) string { return filepath.Join(s.dir, id, dataFile) }

// List returns the manifests of all entries, oldest first. An entry removed
// while List runs (a worker finished it) is left out; one that cannot be
// read (a damaged or missing manifest) is too, and its problem is in err,
// joined with the others'. The entries List could read are returned all
// the same: one bad entry does not hold up the rest.
func (s *Spool) List() ([]*Manifest, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var out []*Manifest
	var problems []error
	for _, de := range des {
		if !de.IsDir() || !ValidID(de.Name()) {
			continue
		}
		m, err := s.Get(de.Name())
		if errors.Is(err, ErrNotFound) {
			// Removed meanwhile (Remove moves the whole folder away first),
			// unless the folder is still there without its manifest:
			// damage, or a hand's work, to report.
			if _, serr := os.Lstat(filepath.Join(s.dir, de.Name())); serr == nil {
				problems = append(problems, fmt.Errorf("spool: entry %s has no manifest (damaged, or changed by hand): its file, if any, is %s; move it into the drop folder to bank it again, then delete %s",
					de.Name(), s.DataPath(de.Name()), filepath.Join(s.dir, de.Name())))
			}
			continue
		}
		if err != nil {
			problems = append(problems, err)
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, errors.Join(problems...)
}

// Remove deletes an entry. Removing a missing entry is not an error, so a
// re-run task can call it again. An entry claimed across filesystems ends
// its claim first (endKept): its original goes, or, if it grew after the
// copy, goes back into the drop folder to be taken again whole.
func (s *Spool) Remove(id string) error { return s.remove(id, false) }

// RemoveOpened is Remove for an entry whose manifest m OpenData returned:
// what OpenData saw of it saves Remove some looks.
func (s *Spool) RemoveOpened(m *Manifest) error { return s.remove(m.ID, m.noOrigin) }

// remove is Remove; noOrigin says the entry has no origin note (so no
// claim to end, and no note to keep as the recycled folder's spare).
func (s *Spool) remove(id string, noOrigin bool) error {
	dir, err := s.entryDir(id)
	if err != nil {
		return err
	}
	if !noOrigin {
		if err := s.endKept(id); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("spool: remove %s: %w", id, err)
		}
	}
	// Locked while it is removed, so that Recover in another process
	// (which deletes what an interrupted Remove left) keeps off a folder
	// this one is recycling: its deletes would land in the next entry.
	// Not locked when someone else holds it (the claimer undoing its own
	// claim, Recover ending a claim): then the folder is not recycled.
	unlock, lerr := lockDir(dir, false)
	if errors.Is(lerr, fs.ErrNotExist) {
		return nil
	}
	if lerr == nil {
		defer unlock()
	}
	// Rename first so a crash mid-delete never leaves a half entry that looks whole.
	trash := filepath.Join(s.dir, incomingDir, id+".removing")
	if err := renameNoReplace(dir, trash); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	s.crash("remove.renamed")
	if lerr == nil && s.recycle(trash, id, noOrigin) {
		return nil
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	// Not fsynced: a removal that a power cut undoes brings back an entry
	// whose work is done, and doing it again is harmless (the upload finds
	// its object and record and removes the entry), while a directory
	// fsync per upload costs a filesystem journal commit each.
	return nil
}

// IDs returns the IDs of all entries, oldest first, without reading their
// manifests (cheap with many entries).
func (s *Spool) IDs() ([]string, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var out []string
	for _, de := range des {
		if de.IsDir() && ValidID(de.Name()) {
			out = append(out, de.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// IDTime is when the entry with ID id was started (its first 12 hex
// digits are Unix milliseconds); zero for an ID of another form.
func IDTime(id string) time.Time {
	if !ValidID(id) {
		return time.Time{}
	}
	ms, err := strconv.ParseInt(id[:12], 16, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
