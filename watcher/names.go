// Names in the drop folder: which asset type and path a file has (from its
// folder), which names are left alone until they are renamed (hidden files,
// downloads and editors' temporary names), and the message for a folder of
// an unknown type. Whether a name can become an S3 key is the claim's
// question (claim.go), answered by package naming.

package watcher

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/dab-assets/dab/internal/plugin"
)

// ignored says whether a name is skipped until it is renamed: hidden files
// and the temporary names of downloads, editors and office programs.
func ignored(name string) bool {
	lower := strings.ToLower(name)
	switch {
	case strings.HasPrefix(name, "."), strings.HasPrefix(name, "~$"), strings.HasSuffix(name, "~"):
		return true
	}
	for _, suffix := range []string{".part", ".tmp", ".crdownload", ".swp"} {
		if strings.HasSuffix(lower, suffix) {
			return true
		}
	}
	return false
}

// locate maps an absolute path in the drop folder to its asset type and path
// below the type folder. ok is false for paths the watcher leaves alone
// (hidden or temporary names, the root itself); problem is set for paths in
// a folder of an unknown type.
func (w *Watcher) locate(path string) (typ, rel string, ok bool, problem string) {
	r, err := filepath.Rel(w.root, path)
	if err != nil || r == "." || strings.HasPrefix(r, "..") {
		return "", "", false, ""
	}
	parts := strings.Split(filepath.ToSlash(r), "/")
	for _, p := range parts {
		if ignored(p) {
			return "", "", false, ""
		}
	}
	if len(parts) == 1 {
		return plugin.DefaultType, parts[0], true, ""
	}
	if !w.types[parts[0]] {
		return "", "", false, parts[0]
	}
	return parts[0], strings.Join(parts[1:], "/"), true, ""
}

func (w *Watcher) unknownTypeMessage(folder string) string {
	return fmt.Sprintf("folder %q is not a registered asset type (known: %s): its files are left where they are; move them into one of those folders", folder, strings.Join(w.cfg.Types, ", "))
}
