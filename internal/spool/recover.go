// Recovery after a crash: what a crash left in .incoming (a claim cut short,
// a stream that never finished) and claims stopped between their commit and
// their end are finished or undone, so that a claimed file is never lost and
// a half-written entry is never seen. Run once at start (the watcher does).

package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// RecoverAction names what Recover did with one unfinished claim or stream.
type RecoverAction string

// What Recover did.
const (
	// RecoverReturned: a claimed file went back to its drop path (or beside
	// it, when a new file took the name).
	RecoverReturned RecoverAction = "returned"
	// RecoverCommitted: a claimed file that could not go back was committed
	// as an entry.
	RecoverCommitted RecoverAction = "committed"
	// RecoverRemoved: what was left of a stream that never finished, or of a
	// claim cut short before its rename, was removed.
	RecoverRemoved RecoverAction = "removed"
	// RecoverCleaned: the original of a committed copy was removed from
	// beside its drop path.
	RecoverCleaned RecoverAction = "cleaned"
	// RecoverFailed: recovery could not finish; Err says why.
	RecoverFailed RecoverAction = "failed"
)

// Recovered says what Recover did with one unfinished incoming folder or
// claim.
type Recovered struct {
	ID     string
	Action RecoverAction
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
		return []Recovered{{Action: RecoverFailed, Err: fmt.Errorf("spool: %w", err)}}
	}
	var out []Recovered
	for _, de := range des {
		tmp := filepath.Join(s.dir, incomingDir, de.Name())
		if !de.IsDir() {
			continue
		}
		if strings.HasSuffix(de.Name(), ".removing") {
			// An interrupted Remove, unless its remover is alive: it may
			// be recycling the folder (see Remove).
			if unlock, err := lockDir(tmp, false); err == nil {
				os.RemoveAll(tmp)
				unlock()
			}
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
// still be beside its drop path under its claim name. With a shared spool
// it goes, unless it grew after it was copied (a writer dab could not see):
// then it goes back under its name, to be taken again, so that what was
// written last is not lost. Otherwise the original is kept until the entry
// ends (see Claim) and is left alone here.
func (s *Spool) endClaims() []Recovered {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return []Recovered{{Action: RecoverFailed, Err: fmt.Errorf("spool: %w", err)}}
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
		r.Action, r.Err = RecoverFailed, fmt.Errorf("spool: recover entry %s: %w", id, err)
		return r
	}
	if _, err := os.Lstat(s.DataPath(id)); errors.Is(err, fs.ErrNotExist) {
		// A claim being undone (uncommit): the file went back already, or
		// is still whole under its claim name.
		r.Action, r.Path = RecoverReturned, o.Source
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
		if err == nil && s.keepOriginals {
			// Not a claim cut short: the original is kept until the entry
			// ends (see Claim), which deletes it, or gives it back if it grew.
			return r
		}
		if err == nil {
			m, err := s.Get(id)
			switch {
			case err != nil:
				r.Action, r.Err = RecoverFailed, err
			case st.Size() == m.Size:
				r.Action, r.Path, r.Err = RecoverCleaned, o.Claim, os.Remove(o.Claim)
			default:
				r.Action = RecoverReturned
				r.Path, r.Err = returnFile(o.Claim, o.Source, id)
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			r.Action, r.Err = RecoverFailed, err
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
		r.Action, r.Err = RecoverRemoved, os.RemoveAll(tmp)
		return r
	}
	var o origin
	if err == nil {
		err = json.Unmarshal(b, &o)
	}
	data := filepath.Join(tmp, dataFile)
	if err != nil {
		if _, serr := os.Lstat(data); errors.Is(serr, fs.ErrNotExist) {
			// A note cut short by the crash: the claim writes it (and
			// fsyncs it) before the file moves, so the file never left.
			r.Action, r.Err = RecoverRemoved, os.RemoveAll(tmp)
			return r
		}
		r.Action, r.Err = RecoverFailed, fmt.Errorf("spool: recover %s: %w", tmp, err)
		return r
	}
	if o.Claim != "" {
		if _, err := os.Lstat(o.Claim); err == nil {
			// Crossed filesystems and the copy may be partial: the original is
			// still whole under its claim name.
			os.Remove(data)
			r.Action = RecoverReturned
			if r.Path, r.Err = returnFile(o.Claim, o.Source, id); r.Err == nil {
				os.RemoveAll(tmp)
			}
			return r
		}
	}
	if _, err := os.Lstat(data); errors.Is(err, fs.ErrNotExist) {
		// The crash came before the rename: the file never left.
		r.Action, r.Err = RecoverRemoved, os.RemoveAll(tmp)
		return r
	}
	if r.Path, err = returnFile(data, o.Source, id); err == nil {
		r.Action = RecoverReturned
		os.RemoveAll(tmp)
		return r
	}
	// It cannot go back (another filesystem, folder gone): finish the claim.
	m, merr := s.newManifest(Input{Type: o.Input.Type, Path: o.Input.Path, Metadata: o.Input.Metadata, Source: o.Input.Source})
	if merr != nil {
		r.Action, r.Err = RecoverFailed, merr
		return r
	}
	m.ID = id
	r.Action, r.Path = RecoverCommitted, filepath.Join(s.dir, id)
	if r.Err = s.finish(tmp, data, m, FileState{}, ""); r.Err == nil {
		s.endClaim(id, &o)
	}
	return r
}
