package watcher

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tus/tusd/v2/pkg/filelocker"
	"github.com/tus/tusd/v2/pkg/filestore"
	tusd "github.com/tus/tusd/v2/pkg/handler"

	"github.com/dab-assets/dab/internal/spool"
)

// tusIDLen is the length of the upload IDs tusd's file store creates: 16
// random bytes in lower-case hex.
const tusIDLen = 32

// validTusID reports whether id is exactly the form the tus store creates.
// tusd takes the ID from the decoded URL path and joins it to its folder, so
// anything else ("..%2F..%2Fvictim", "a/b", "%2e%2e") could name a file
// outside the folder. It is checked at the HTTP edge and again here.
func validTusID(id string) bool {
	if len(id) != tusIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// tusStore is tusd's file store confined to its folder: it serves only IDs
// of the form validTusID accepts, never lets a hook choose where the bytes
// go, and refuses an upload whose .info names any file but the one its ID
// gives (tusd's file store would otherwise open whatever Storage["Path"]
// says).
type tusStore struct {
	dir   string
	inner filestore.FileStore
}

func newTusStore(dir string) tusStore {
	return tusStore{dir: dir, inner: filestore.New(dir)}
}

// useIn registers the store for the tus features dab offers: create, write,
// terminate. Concatenation, deferred length and download stay off.
func (s tusStore) useIn(c *tusd.StoreComposer) {
	c.UseCore(s)
	c.UseTerminater(s)
	c.UseLocker(tusLocker{inner: filelocker.New(s.dir)})
}

// dataPath is where the bytes of upload id live.
func (s tusStore) dataPath(id string) string { return filepath.Join(s.dir, id) }

// infoPath is where tusd keeps the upload's description.
func (s tusStore) infoPath(id string) string { return filepath.Join(s.dir, id+".info") }

func (s tusStore) NewUpload(ctx context.Context, info tusd.FileInfo) (tusd.Upload, error) {
	if info.ID != "" && !validTusID(info.ID) {
		return nil, fmt.Errorf("tus: refusing upload ID %q: not of the form the store creates", info.ID)
	}
	info.Storage = nil // the store picks the path from the ID, never a hook
	up, err := s.inner.NewUpload(ctx, info)
	if err != nil {
		return nil, tusDiskError(err)
	}
	return tusUpload{up}, nil
}

func (s tusStore) GetUpload(ctx context.Context, id string) (tusd.Upload, error) {
	if !validTusID(id) {
		return nil, tusd.ErrNotFound
	}
	up, err := s.inner.GetUpload(ctx, id)
	if err != nil {
		return nil, err
	}
	info, err := up.GetInfo(ctx)
	if err != nil {
		return nil, err
	}
	if info.ID != id || info.Storage[filestore.StorageKeyPath] != s.dataPath(id) ||
		info.Storage[filestore.StorageKeyInfoPath] != s.infoPath(id) {
		// A .info that points elsewhere was not written by this store.
		return nil, tusd.ErrNotFound
	}
	return tusUpload{up}, nil
}

func (s tusStore) AsTerminatableUpload(up tusd.Upload) tusd.TerminatableUpload {
	if u, ok := up.(tusUpload); ok {
		up = u.Upload
	}
	return s.inner.AsTerminatableUpload(up)
}

// tusUpload answers a full disk as such: 507 without the server's paths
// (the bytes that did arrive are kept, so the client can resume later).
type tusUpload struct{ tusd.Upload }

func (u tusUpload) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	n, err := u.Upload.WriteChunk(ctx, offset, src)
	return n, tusDiskError(err)
}

func tusDiskError(err error) error {
	if err == nil || !spool.IsNoSpace(err) {
		return err
	}
	e := tusd.NewError("ERR_INSUFFICIENT_STORAGE",
		"the server's upload disk is full: the bytes it received are kept; resume the upload later (operators: free space on the spool's disk, see /readyz)",
		http.StatusInsufficientStorage)
	e.HTTPResponse.Header["Retry-After"] = "60"
	return e
}

// tusLocker is tusd's file locker, refusing IDs the store would not create
// (its lock file is named after the ID).
type tusLocker struct{ inner filelocker.FileLocker }

func (l tusLocker) NewLock(id string) (tusd.Lock, error) {
	if !validTusID(id) {
		return nil, tusd.ErrNotFound
	}
	return l.inner.NewLock(id)
}

// ExpireTus removes abandoned resumable uploads (nothing received for
// TusExpiry) until ctx ends, checking every tenth of TusExpiry (at most
// hourly), so a client that never comes back does not keep disk space
// forever.
func (in *Intake) ExpireTus(ctx context.Context) {
	every := min(in.cfg.TusExpiry/10, time.Hour)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		in.expireTus(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// expireTus removes the uploads last written before now - TusExpiry and
// returns how many.
func (in *Intake) expireTus(ctx context.Context, now time.Time) int {
	entries, err := os.ReadDir(in.tus.dir)
	if err != nil {
		in.log.Warn("intake.tus_expiry_failed", "error", err.Error())
		return 0
	}
	removed := 0
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".info")
		if !ok || !validTusID(id) {
			continue
		}
		last := time.Time{}
		for _, p := range []string{in.tus.dataPath(id), in.tus.infoPath(id)} {
			if st, err := os.Stat(p); err == nil && st.ModTime().After(last) {
				last = st.ModTime()
			}
		}
		if now.Sub(last) < in.cfg.TusExpiry {
			continue
		}
		if in.removeTus(ctx, id) {
			removed++
			in.log.Info("intake.tus_expired", "upload_id", id, "last_write", last.UTC().Format(time.RFC3339))
		}
	}
	return removed
}

// removeTus deletes one upload under its lock (skipped when a request holds it).
func (in *Intake) removeTus(ctx context.Context, id string) bool {
	lock, err := tusLocker{inner: filelocker.New(in.tus.dir)}.NewLock(id)
	if err != nil {
		return false
	}
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := lock.Lock(lctx, func() {}); err != nil {
		return false
	}
	defer lock.Unlock()
	os.Remove(in.tus.dataPath(id))
	return os.Remove(in.tus.infoPath(id)) == nil
}
