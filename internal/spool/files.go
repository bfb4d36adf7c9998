// File operations that never lose or replace a file, shared by the writer,
// the claim, recovery and the moves out: durable writes (fsync, then rename),
// renames that refuse to replace, copies that are read back and checked.

package spool

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// writeJSONInPlaceSync writes v to name (replacing what a crash may have
// left there) and fsyncs it. No temporary file and rename: for files
// inside an incoming folder, which
// nobody reads until it is committed (a crash mid-write leaves a partial
// file there, and Recover knows what a partial note means: see
// recoverOne). It saves a rename per file on every claim and stream.
func writeJSONInPlaceSync(name string, v any) error { return writeJSONInPlace(name, v, true) }

// writeJSONInPlace is writeJSONInPlaceSync with the fsync left to the
// caller when sync is false (a batch makes many files durable at once).
func writeJSONInPlace(name string, v any, sync bool) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	// Not O_TRUNC: over a recycled note (recycle.go) the file keeps its
	// block, which truncating to 0 would free (and TRIM, on a disk mounted
	// with discard) only for the write to take one again.
	f, err := openFD(name, os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	b = append(b, '\n')
	err = f.write(b)
	if err == nil {
		err = f.truncate(int64(len(b)))
	}
	if err == nil && sync {
		err = f.sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool: write %s: %w", filepath.Base(name), err)
	}
	return nil
}

// syncFS makes everything written to the filesystem of the spool
// durable (syncfs(2)): one call in place of an fsync per file and folder.
//
// It goes through the descriptor of the spool folder the Spool opened when
// it was opened (Spool.fsErrs): syncfs reports a write error of the
// filesystem once to each descriptor that was open when it happened, so a
// descriptor opened for the sync would miss one from before, such as the
// background writeback of a batch's bytes failing before the batch syncs.
// (Of two batches of one process syncing at once, one is told.)
func (s *Spool) syncFS() error {
	if err := unix.Syncfs(int(s.fsErrs.Fd())); err != nil {
		return fmt.Errorf("spool: sync the filesystem of %s: %w", s.dir, err)
	}
	return nil
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
	f, err := openFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
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
		err = rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: write %s: %w", filepath.Base(name), err)
	}
	return nil
}

// syncDir fsyncs a folder (or a file: syncFile).
func syncDir(dir string) error {
	d, err := openFD(dir, unix.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.sync(); err != nil {
		return fmt.Errorf("spool: sync %s: %w", dir, err)
	}
	return nil
}

// syncFile fsyncs a file written and closed before.
func syncFile(name string) error { return syncDir(name) }

// renameNoReplace renames like os.Rename but fails with fs.ErrExist instead
// of replacing an existing file.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: fs.ErrExist}
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// The filesystem cannot do it atomically: check, then rename.
		if _, serr := os.Lstat(to); serr == nil {
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: fs.ErrExist}
		}
		return os.Rename(from, to)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// copyFile copies src to a new file dst and fsyncs it. It returns the
// SHA-256 of the bytes it read and src's file info. src must be a regular
// file itself: a symbolic link is not followed (what it names may be a file
// dab can read and whoever put the link in the drop folder cannot), and a
// FIFO or device is refused without blocking on it.
func copyFile(src, dst string) (string, fs.FileInfo, error) {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", nil, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", nil, err
	}
	if !st.Mode().IsRegular() {
		return "", nil, fmt.Errorf("copy %s: not a regular file (%s)", src, st.Mode().Type())
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", nil, err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return "", nil, fmt.Errorf("copy %s: %w", src, err)
	}
	return hex.EncodeToString(h.Sum(nil)), st, nil
}

// keepMetadata gives a copy its original's permissions and mtime, as mv does
// across filesystems: the file is the same file wherever dab puts it.
func keepMetadata(dst string, orig fs.FileInfo) error {
	if err := os.Chmod(dst, orig.Mode().Perm()); err != nil {
		return err
	}
	return os.Chtimes(dst, time.Time{}, orig.ModTime())
}

// copyVerified copies src to dst, fsyncs it, reads it back to check the copy
// has the bytes the source had, and gives it the source's mode and mtime.
func copyVerified(src, dst string) error {
	want, st, err := copyFile(src, dst)
	if err != nil {
		return err
	}
	got, _, err := hashFile(dst)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("copy of %s does not read back the same (sha256 %s): disk error?", src, got)
	}
	return keepMetadata(dst, st)
}

func hashFile(name string) (string, int64, error) {
	f, err := openRead(name)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
