package spool

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// FreeBytes is the space left on the spool's filesystem for an unprivileged
// writer (what dab can still write there).
func (s *Spool) FreeBytes() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return 0, fmt.Errorf("spool: free space: %w", err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// IsNoSpace reports whether err means a disk (or a quota) is full.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
