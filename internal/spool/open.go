package spool

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// openFile is os.OpenFile for the spool's own files and folders, for one
// system call where os.OpenFile makes six: on Linux it puts every new
// descriptor into non-blocking mode, offers it to the network poller
// (which refuses regular files and folders) and puts it back (four fcntl
// calls and an epoll_ctl). A claim and an upload each open about eight
// files and folders, and on machines where a system call is dear (virtual
// machines) those calls were a sixth of the watcher's. The file reads and
// writes blocking, as os.OpenFile's does once the poller refused it; no
// caller here needs deadlines. Not for files that may be FIFOs or
// devices: the spool opens what it made, or claimed after checking.
func openFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	for {
		fd, err := unix.Open(name, flag|unix.O_CLOEXEC, uint32(perm.Perm()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}

// openRead is os.Open through openFile.
func openRead(name string) (*os.File, error) { return openFile(name, os.O_RDONLY, 0) }

// fd is a descriptor the spool opened with open(2) alone and uses through
// system calls of its own, for its notes, locks and folder syncs: wrapping
// it in an *os.File (os.NewFile) costs a system call more per open (an
// fcntl asking for the descriptor's flags), two of them per claim and per
// upload.
type fd int

// openFD opens name with open(2), close-on-exec.
func openFD(name string, flag int, perm uint32) (fd, error) {
	for {
		n, err := unix.Open(name, flag|unix.O_CLOEXEC, perm)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: name, Err: err}
		}
		return fd(n), nil
	}
}

// Close closes the descriptor. Not retried on EINTR: on Linux the
// descriptor is gone whatever close(2) answers.
func (f fd) Close() error { return unix.Close(int(f)) }

// write writes all of b.
func (f fd) write(b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(int(f), b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

func (f fd) truncate(size int64) error {
	for {
		if err := unix.Ftruncate(int(f), size); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func (f fd) sync() error {
	for {
		if err := unix.Fsync(int(f)); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// readFile is os.ReadFile through openFD, for the spool's small notes (a
// manifest is under a KiB): without os.ReadFile's fstat, and in two reads
// where io.ReadAll, starting at 512 bytes, would need three.
func readFile(name string) ([]byte, error) {
	f, err := openFD(name, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 0, 4096)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow
		}
		n, err := unix.Read(int(f), b[len(b):cap(b)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

// rename is os.Rename for a destination that is a file or does not exist,
// for one system call: os.Rename first looks at the destination (an lstat)
// so as to refuse replacing a folder. Folders are moved with
// renameNoReplace, which refuses any destination that exists.
func rename(from, to string) error {
	for {
		err := unix.Rename(from, to)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
		}
		return nil
	}
}

// startWriteback asks the kernel to start writing f's dirty pages back, and
// does not wait. A hint: the fsync or syncfs that follows reports any error.
func startWriteback(f *os.File) {
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
