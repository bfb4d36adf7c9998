// Package naming validates the names that come from outside (asset types and
// the relative paths of files) and builds S3 object keys from them. Every
// intake (CLI, drop folder, HTTP) goes through these functions, so a name that
// is refused in one place is refused everywhere, for the same reason.
package naming

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrInvalid is wrapped by every validation error, so callers can branch on
// "the input was bad" without parsing messages.
var ErrInvalid = errors.New("invalid")

// MaxKeyBytes is S3's limit on the length of an object key.
const MaxKeyBytes = 1024

// MaxTypeLen bounds asset type names; they become the first folder of every key.
const MaxTypeLen = 32

// ValidateType checks an asset type name: 1-32 characters, lower-case letters,
// digits and '-', starting with a letter. Whether the type is registered is the
// plugin registry's business, not this function's.
func ValidateType(t string) error {
	if t == "" {
		return fmt.Errorf("%w: asset type is empty: give a type such as generic or cyoa", ErrInvalid)
	}
	if len(t) > MaxTypeLen {
		return fmt.Errorf("%w: asset type %q is longer than %d characters", ErrInvalid, t, MaxTypeLen)
	}
	for i, r := range t {
		ok := (r >= 'a' && r <= 'z') || (i > 0 && ((r >= '0' && r <= '9') || r == '-'))
		if !ok {
			return fmt.Errorf("%w: asset type %q: use lower-case letters, digits and '-', starting with a letter", ErrInvalid, t)
		}
	}
	return nil
}

// CleanPath validates the path of a file relative to its type folder
// ("forest/NODE_a.png") and returns it in canonical slash-separated form.
// It refuses anything that could escape a folder or confuse a reader of the
// bucket: absolute paths, "." and ".." segments, empty segments, backslashes,
// control characters, invalid UTF-8 and hidden (dot) segments.
func CleanPath(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%w: file name is empty", ErrInvalid)
	}
	if !utf8.ValidString(p) {
		return "", fmt.Errorf("%w: file name %q is not valid UTF-8: rename the file", ErrInvalid, p)
	}
	if strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%w: path %q is absolute: give a path relative to the type folder", ErrInvalid, p)
	}
	if strings.Contains(p, `\`) {
		return "", fmt.Errorf("%w: path %q contains a backslash: use '/' between folders and rename files with '\\' in their name", ErrInvalid, p)
	}
	for _, r := range p {
		if unicode.IsControl(r) {
			return "", fmt.Errorf("%w: path %q contains a control character: rename the file", ErrInvalid, p)
		}
	}
	for _, seg := range strings.Split(p, "/") {
		switch {
		case seg == "":
			return "", fmt.Errorf("%w: path %q has an empty folder name (\"//\" or a trailing '/')", ErrInvalid, p)
		case seg == "." || seg == "..":
			return "", fmt.Errorf("%w: path %q contains %q: paths may not leave or name their folder", ErrInvalid, p, seg)
		case strings.HasPrefix(seg, "."):
			return "", fmt.Errorf("%w: path %q contains the hidden name %q: rename it without the leading '.'", ErrInvalid, p, seg)
		case strings.TrimSpace(seg) != seg:
			return "", fmt.Errorf("%w: path %q has a name with leading or trailing spaces: rename it", ErrInvalid, p)
		}
	}
	// path.Clean is a no-op on a path that passed the checks above; keep it
	// as a second line of defence.
	if c := path.Clean(p); c != p {
		return "", fmt.Errorf("%w: path %q is not in canonical form (%q)", ErrInvalid, p, c)
	}
	return p, nil
}

// Key builds the S3 object key "<type>/<path>" and checks its length.
func Key(assetType, relPath string) (string, error) {
	if err := ValidateType(assetType); err != nil {
		return "", err
	}
	p, err := CleanPath(relPath)
	if err != nil {
		return "", err
	}
	k := assetType + "/" + p
	if len(k) > MaxKeyBytes {
		return "", fmt.Errorf("%w: object key for %q is %d bytes, S3 allows %d: shorten the name or folders", ErrInvalid, relPath, len(k), MaxKeyBytes)
	}
	return k, nil
}
