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
// user's cache folder for that moment, and storygraph, which imports
// go-graphviz and so is initialized after it, puts TMPDIR back (Restore).
// The hand-over goes through the environment, the one state both share.
package wasmcache

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

const (
	// savedEnv holds TMPDIR as it was ("=" and the value) or "unset".
	savedEnv = "DAB_GRAPHVIZ_SAVED_TMPDIR"
	// removeEnv names a folder made for this process alone, to remove.
	removeEnv = "DAB_GRAPHVIZ_REMOVE_DIR"
)

func init() {
	dir, err := ownCacheDir()
	remove := ""
	if err != nil {
		// No folder of one's own to keep the cache in: one for this
		// process alone (go-graphviz then compiles anew, about a second).
		if dir, err = os.MkdirTemp("", "dab-graphviz-"); err != nil {
			return
		}
		remove = dir
	}
	saved := "unset"
	if v, ok := os.LookupEnv("TMPDIR"); ok {
		saved = "=" + v
	}
	os.Setenv(savedEnv, saved)
	os.Setenv(removeEnv, remove)
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
	if dir := os.Getenv(removeEnv); dir != "" {
		os.RemoveAll(dir)
	}
	os.Unsetenv(savedEnv)
	os.Unsetenv(removeEnv)
}

// ownCacheDir is <user cache folder>/dab (~/.cache/dab), made if missing,
// refused unless it is a folder of the current user's that no one else may
// write.
func ownCacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(base, "dab")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return "", err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || !st.IsDir() || int(sys.Uid) != os.Geteuid() || st.Mode().Perm()&0o022 != 0 {
		return "", fmt.Errorf("wasmcache: %s is not a folder of yours that only you may write", dir)
	}
	return dir, nil
}
