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

// readFile is os.ReadFile through openFile, for the spool's small notes
// (a manifest is under a KiB): without os.ReadFile's fstat, and in two
// reads where io.ReadAll, starting at 512 bytes, would need three.
func readFile(name string) ([]byte, error) {
	f, err := openRead(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 0, 4096)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow
		}
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
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
