package spool

import (
	"errors"

	"golang.org/x/sys/unix"
)

// openForWriting reports whether a process on this machine (this one
// included) holds the file at path open for writing. A writer that pauses
// longer than the settle time has a file that looks complete; taking it
// would cut it short, since what it writes next goes into the taken file.
//
// It asks the kernel for a read lease (F_SETLEASE F_RDLCK), which is refused
// with EAGAIN exactly when the inode is open for writing by anyone, and
// releases it at once. That is one open and two fcntl calls, and it sees
// every process: other users' too, this one, and descriptors that children
// inherited. The alternatives
// are worse: inotify's close-write says that one writer closed, not that
// none is left (and fsnotify does not expose it); reading /proc/*/fd and
// fdinfo costs a readlink per open file on the machine and cannot see other
// users' processes without CAP_SYS_PTRACE.
//
// false also means "cannot tell": the file is not a regular file, the process
// may not take leases on it (the kernel allows them to the file's owner and to
// CAP_LEASE), leases are off (fs.leases-enable), or the filesystem is not one
// where a refusal means a local writer. NFS and SMB refuse a lease whenever
// the server has not delegated the file, so their EAGAIN says nothing about
// writers (and writers on other machines are invisible anyway). Then the
// settle time and the growth checks of Claim and Open are what is left.
func openForWriting(path string) bool {
	// O_NONBLOCK: a FIFO put in the file's place must not block us, and a
	// conflicting lease held by another process fails at once instead of
	// making us wait for its break.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return true // someone holds a write lease: it has the file open and means to change it
	}
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil || !leaseMeansLocalWriter(int64(sfs.Type)) {
		return false
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK); err != nil {
		return errors.Is(err, unix.EAGAIN)
	}
	// Closing fd would release the lease too; releasing it first shortens the
	// time an opener for writing waits (a lease break) to nothing.
	unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
	return false
}

// leaseMeansLocalWriter says whether fsType (a statfs magic) is a local
// filesystem, on which a refused read lease means that the file is open for
// writing.
func leaseMeansLocalWriter(fsType int64) bool {
	switch fsType {
	case unix.EXT4_SUPER_MAGIC, // also ext2 and ext3
		unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC, unix.RAMFS_MAGIC,
		unix.F2FS_SUPER_MAGIC, unix.BCACHEFS_SUPER_MAGIC, unix.NILFS_SUPER_MAGIC, unix.REISERFS_SUPER_MAGIC,
		unix.OVERLAYFS_SUPER_MAGIC, // containers' root filesystems
		zfsSuperMagic:
		return true
	}
	return false
}

// zfsSuperMagic is OpenZFS's statfs magic (not in x/sys/unix).
const zfsSuperMagic = 0x2fc12fc1
