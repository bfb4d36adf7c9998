package intake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
// says). Its errors never carry the server's paths: a full disk is 507,
// anything else a plain 500 with the detail in the log.
type tusStore struct {
	dir   string
	inner filestore.FileStore
	log   *slog.Logger
}

func newTusStore(dir string, log *slog.Logger) tusStore {
	return tusStore{dir: dir, inner: filestore.New(dir), log: log}
}

// useIn registers the store for the tus features dab offers: create, write,
// terminate. Concatenation, deferred length and download stay off.
func (s tusStore) useIn(c *tusd.StoreComposer) {
	c.UseCore(s)
	c.UseTerminater(s)
	c.UseLocker(tusLocker{inner: filelocker.New(s.dir), store: s})
}

// dataPath is where the bytes of upload id live.
func (s tusStore) dataPath(id string) string { return filepath.Join(s.dir, id) }

// infoPath is where tusd keeps the upload's description.
func (s tusStore) infoPath(id string) string { return filepath.Join(s.dir, id+".info") }

// answer turns a store error into what the client may see.
func (s tusStore) answer(op string, err error) error {
	var te tusd.Error
	switch {
	case err == nil || errors.As(err, &te):
		return err
	case spool.IsNoSpace(err):
		return tusError(errNoSpace)
	}
	s.log.Error("intake.tus_failed", "op", op, "error", err.Error())
	return tusd.NewError("ERR_INTERNAL", "the server could not handle the upload ("+op+"); the server log has the details", http.StatusInternalServerError)
}

func (s tusStore) NewUpload(ctx context.Context, info tusd.FileInfo) (tusd.Upload, error) {
	if info.ID != "" && !validTusID(info.ID) {
		return nil, s.answer("create", fmt.Errorf("tus: refusing upload ID %q: not of the form the store creates", info.ID))
	}
	if info.ID == "" {
		b := make([]byte, tusIDLen/2)
		rand.Read(b)
		info.ID = hex.EncodeToString(b)
	}
	info.Storage = nil // the store picks the path from the ID, never a hook
	up, err := s.inner.NewUpload(ctx, info)
	if err != nil {
		// Leave nothing half-made (an empty .info would answer 500 forever).
		os.Remove(s.dataPath(info.ID))
		os.Remove(s.infoPath(info.ID))
		return nil, s.answer("create", err)
	}
	return tusUpload{Upload: up, store: s}, nil
}

func (s tusStore) GetUpload(ctx context.Context, id string) (tusd.Upload, error) {
	if !validTusID(id) {
		return nil, tusd.ErrNotFound
	}
	up, err := s.inner.GetUpload(ctx, id)
	if err != nil {
		var te tusd.Error
		if !errors.As(err, &te) && !spool.IsNoSpace(err) {
			// An unreadable .info (cut short by a crash or a full disk) is
			// no upload the client can resume.
			s.log.Warn("intake.tus_unreadable", "upload_id", id, "error", err.Error())
			return nil, tusd.ErrNotFound
		}
		return nil, s.answer("read", err)
	}
	info, err := up.GetInfo(ctx)
	if err != nil {
		return nil, s.answer("read", err)
	}
	if info.ID != id || info.Storage[filestore.StorageKeyPath] != s.dataPath(id) ||
		info.Storage[filestore.StorageKeyInfoPath] != s.infoPath(id) {
		// A .info that points elsewhere was not written by this store.
		s.log.Warn("intake.tus_foreign_info", "upload_id", id)
		return nil, tusd.ErrNotFound
	}
	return tusUpload{Upload: up, store: s}, nil
}

func (s tusStore) AsTerminatableUpload(up tusd.Upload) tusd.TerminatableUpload {
	if u, ok := up.(tusUpload); ok {
		return tusTerminator{inner: s.inner.AsTerminatableUpload(u.Upload), store: s}
	}
	return tusTerminator{inner: s.inner.AsTerminatableUpload(up), store: s}
}

// tusUpload passes every error of the file store through answer.
type tusUpload struct {
	tusd.Upload
	store tusStore
}

func (u tusUpload) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	n, err := u.Upload.WriteChunk(ctx, offset, src)
	return n, u.store.answer("write", err)
}

func (u tusUpload) GetInfo(ctx context.Context) (tusd.FileInfo, error) {
	info, err := u.Upload.GetInfo(ctx)
	return info, u.store.answer("read", err)
}

func (u tusUpload) GetReader(ctx context.Context) (io.ReadCloser, error) {
	r, err := u.Upload.GetReader(ctx)
	return r, u.store.answer("read", err)
}

func (u tusUpload) FinishUpload(ctx context.Context) error {
	return u.store.answer("finish", u.Upload.FinishUpload(ctx))
}

type tusTerminator struct {
	inner tusd.TerminatableUpload
	store tusStore
}

func (t tusTerminator) Terminate(ctx context.Context) error {
	return t.store.answer("delete", t.inner.Terminate(ctx))
}

// tusLocker is tusd's file locker, refusing IDs the store would not create
// (its lock file is named after the ID).
type tusLocker struct {
	inner filelocker.FileLocker
	store tusStore
}

func (l tusLocker) NewLock(id string) (tusd.Lock, error) {
	if !validTusID(id) {
		return nil, tusd.ErrNotFound
	}
	lock, err := l.inner.NewLock(id)
	if err != nil {
		return nil, l.store.answer("lock", err)
	}
	return tusLock{inner: lock, store: l.store}, nil
}

// tusLock answers a lock file that cannot be written (a full disk) as the
// store does.
type tusLock struct {
	inner tusd.Lock
	store tusStore
}

func (l tusLock) Lock(ctx context.Context, requestRelease func()) error {
	return l.store.answer("lock", l.inner.Lock(ctx, requestRelease))
}

func (l tusLock) Unlock() error { return l.inner.Unlock() }

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
	lock, err := tusLocker{inner: filelocker.New(in.tus.dir), store: in.tus}.NewLock(id)
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
