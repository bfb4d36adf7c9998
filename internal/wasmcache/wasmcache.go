// Package wasmcache keeps go-graphviz's compiled WebAssembly in a folder of
// the user's own. go-graphviz compiles its WebAssembly when its package is
// initialized, in every dab process, and caches the machine code it makes in
// $TMPDIR/go-graphviz: a folder that any local user may have made first,
// whose files the next dab would load and run (the cache checks them with a
// CRC only), and that, once one user made it, makes every other user's dab
// fail at start.
//
// Packages are initialized in the order of their import paths, each once
// its imports are: this package (github.com/dab-assets/...) before
// go-graphviz's (github.com/goccy/...). Its init points TMPDIR at the
// user's cache folder, as the descriptor it checked (so that a swap of the
// path cannot hand go-graphviz another folder), or, without one, at a path
// where no cache can be made; storygraph, which imports go-graphviz and so
// is initialized after it, puts TMPDIR back (Restore).
// The hand-over goes through the environment, the one state both share.
package wasmcache

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// savedEnv holds TMPDIR as it was ("=" and the value) or "unset".
const savedEnv = "DAB_GRAPHVIZ_SAVED_TMPDIR"

// noCache is a TMPDIR in which no folder can be made: go-graphviz then
// compiles without a cache (about a second) rather than use a shared one.
const noCache = "/dev/null/dab-no-graphviz-cache"

func init() {
	dir := noCache
	if fd, err := openOwnCacheDir(); err == nil {
		// The folder as opened and checked, whatever its path names by
		// the time go-graphviz looks (a parent another user may write
		// could swap it). The descriptor stays open: the cache may be
		// read again later.
		dir = "/proc/self/fd/" + strconv.Itoa(fd)
	}
	saved := "unset"
	if v, ok := os.LookupEnv("TMPDIR"); ok {
		saved = "=" + v
	}
	os.Setenv(savedEnv, saved)
	os.Setenv("TMPDIR", dir)
}

// Restore puts TMPDIR back as it was before go-graphviz was initialized.
// Call it from the init of a package that imports go-graphviz.
func Restore() {
	saved, ok := os.LookupEnv(savedEnv)
	if !ok {
		return
	}
	if saved == "unset" {
		os.Unsetenv("TMPDIR")
	} else {
		os.Setenv("TMPDIR", saved[1:])
	}
	os.Unsetenv(savedEnv)
}

// openOwnCacheDir opens <user cache folder>/dab (~/.cache/dab), made if
// missing, and returns its descriptor if it is a folder (not a link) of
// the current user's that no one else may write (one others may read is
// made private). Nothing is made, and there is no cache, unless the user
// cache folder is the current user's too: with another user's HOME (sudo
// keeping it), a link there could point the new folder anywhere.
func openOwnCacheDir() (int, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return -1, err
	}
	if _, err := os.Stat(base); err != nil {
		home, herr := os.UserHomeDir()
		if herr != nil || !ownedByMe(home) {
			return -1, fmt.Errorf("wasmcache: no cache folder of yours: %w", err)
		}
		if err := os.MkdirAll(base, 0o700); err != nil {
			return -1, err
		}
	}
	bfd, err := unix.Open(base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(bfd)
	var st unix.Stat_t
	if err := unix.Fstat(bfd, &st); err != nil || int(st.Uid) != os.Geteuid() {
		return -1, fmt.Errorf("wasmcache: %s is not yours", base)
	}
	if err := unix.Mkdirat(bfd, "dab", 0o700); err != nil && err != unix.EEXIST {
		return -1, err
	}
	fd, err := unix.Openat(bfd, "dab", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Fstat(fd, &st); err != nil || int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		// Someone else's, or others may have written into it already.
		unix.Close(fd)
		return -1, fmt.Errorf("wasmcache: %s/dab is not a folder of yours that only you may write", base)
	}
	if st.Mode&0o077 != 0 {
		unix.Fchmod(fd, 0o700) // readable by others: the cache is nobody else's business
	}
	return fd, nil
}

// ownedByMe reports whether path is the current user's.
func ownedByMe(path string) bool {
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil && int(st.Uid) == os.Geteuid()
}
