// Group commit of streams. A stream's entry (`dab upload`, the HTTP intake)
// is made durable with four fsyncs (its bytes, its manifest, its incoming
// folder and, after the rename, the spool folder); `dab upload` of many
// files and concurrent HTTP uploads commit many entries at once, and the
// fsyncs were a fifth of the command's CPU (perf, P1b). Commits that arrive
// while another is being made durable wait and go together: one syncfs for
// their bytes, manifests and folders, their renames into place, one fsync
// of the spool folder. The order of what becomes durable is a single
// commit's, so a crash leaves only states Recover knows (an incoming folder
// without an origin note: a stream that never finished). A commit that
// finds no other waiting takes the single path, with its own fsyncs, so
// that a lone upload never waits for whatever else the filesystem holds
// dirty.

package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// commitGroup gathers the commits of streams waiting to be made durable.
type commitGroup struct {
	mu      sync.Mutex
	pending []*streamCommit
	// leading: a caller is making a batch durable. When it is done it
	// hands the lead to the first commit that came meanwhile, which makes
	// those durable; so no caller waits longer than two batches.
	leading bool
}

// streamCommit is one stream's entry on its way into place.
type streamCommit struct {
	tmp  string
	data *os.File // the bytes, written and still open
	m    *Manifest
	err  error
	// wake is signalled once: when the commit is done (err is set), or
	// when it is handed the lead (leads is set).
	wake  chan struct{}
	leads bool
}

// commitStream makes the entry in tmp durable and visible: its bytes are in
// data (still open; commitStream closes it), its manifest m. It writes the
// manifest, then joins the commits waiting; when no batch is being made
// durable, or when it is handed the lead, it makes the waiting ones (its
// own among them) durable as one batch.
func (s *Spool) commitStream(tmp string, data *os.File, m *Manifest) error {
	if err := writeJSONInPlace(filepath.Join(tmp, manifestFile), m, false); err != nil {
		data.Close()
		return err
	}
	c := &streamCommit{tmp: tmp, data: data, m: m, wake: make(chan struct{}, 1)}
	g := &s.commits
	g.mu.Lock()
	g.pending = append(g.pending, c)
	if g.leading {
		g.mu.Unlock()
		if <-c.wake; !c.leads {
			return c.err
		}
		g.mu.Lock()
	}
	g.leading = true
	batch := g.pending // c's commit among them
	g.pending = nil
	g.mu.Unlock()
	s.commitBatch(batch, c)
	g.mu.Lock()
	if len(g.pending) > 0 {
		next := g.pending[0]
		next.leads = true
		next.wake <- struct{}{}
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	return c.err
}

// commitBatch commits every entry of batch and tells each but leader (the
// caller) its outcome.
func (s *Spool) commitBatch(batch []*streamCommit, leader *streamCommit) {
	defer func() {
		for _, c := range batch {
			c.data.Close()
			if c != leader {
				c.wake <- struct{}{}
			}
		}
	}()
	if len(batch) == 1 {
		s.crash("commit.alone")
		c := batch[0]
		c.err = s.commitOne(c)
		return
	}
	if err := s.syncFS(); err != nil {
		for _, c := range batch {
			c.err = err
		}
		return
	}
	s.crash("commit.synced")
	var renamed []*streamCommit
	for _, c := range batch {
		if err := renameNoReplace(c.tmp, filepath.Join(s.dir, c.m.ID)); err != nil {
			c.err = fmt.Errorf("spool: commit %s: %w", c.m.ID, err)
			continue
		}
		renamed = append(renamed, c)
		s.crash("commit.renamed")
	}
	if err := syncDir(s.dir); err != nil {
		for _, c := range renamed {
			c.err = err
		}
	}
}

// commitOne is a commit alone: its bytes, manifest and folders fsynced.
func (s *Spool) commitOne(c *streamCommit) error {
	if err := c.data.Sync(); err != nil {
		return fmt.Errorf("spool: write %s: %w", c.m.Name, err)
	}
	if err := syncFile(filepath.Join(c.tmp, manifestFile)); err != nil {
		return err
	}
	if err := syncDir(c.tmp); err != nil {
		return err
	}
	if err := renameNoReplace(c.tmp, filepath.Join(s.dir, c.m.ID)); err != nil {
		return fmt.Errorf("spool: commit %s: %w", c.m.ID, err)
	}
	return syncDir(s.dir)
}
