// Package naming validates the names that come from outside (asset types and
// the relative paths of files) and builds S3 object keys from them. Every
// intake (CLI, drop folder, HTTP) goes through these functions, so a name that
// is refused in one place is refused everywhere, for the same reason.
package naming

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// ErrInvalid is wrapped by every validation error, so callers can branch on
// "the input was bad" without parsing messages.
var ErrInvalid = errors.New("invalid")

// MaxKeyBytes is S3's limit on the length of an object key.
const MaxKeyBytes = 1024

// MaxTypeLen bounds asset type names; they become the first folder of every key.
const MaxTypeLen = 32

// MaxSegmentBytes bounds each folder name in a path: the limit of common
// file systems (NAME_MAX), which the spool's failed folder and every tool
// that copies the bucket to disk must be able to hold.
const MaxSegmentBytes = 255

// MaxFileNameBytes bounds the file name (the last segment): the failed
// folder keeps "<name>.error.json" (written through a ".tmp") beside a file
// it could not upload, and that name must fit NAME_MAX too.
const MaxFileNameBytes = MaxSegmentBytes - len(".error.json.tmp")

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
// ("forest/NODE_a.png") and returns it in canonical form: slash-separated
// and in Unicode NFC, so a name typed on one system and the same name
// decomposed by another (macOS) are one key, not two.
// It refuses anything that could escape a folder or confuse a reader of the
// bucket: absolute paths, "." and ".." segments, empty segments, backslashes,
// control, format (bidi overrides, zero-width, BOM) and non-ASCII space
// characters, invalid UTF-8, hidden (dot) segments and names longer than
// MaxSegmentBytes.
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
		if msg := RuneProblem(r); msg != "" {
			return "", fmt.Errorf("%w: path %q contains %s (%U): rename the file", ErrInvalid, p, msg, r)
		}
	}
	p = norm.NFC.String(p)
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		limit := MaxSegmentBytes
		if i == len(segs)-1 {
			limit = MaxFileNameBytes
		}
		switch {
		case seg == "":
			return "", fmt.Errorf("%w: path %q has an empty folder name (\"//\" or a trailing '/'): remove it", ErrInvalid, p)
		case seg == "." || seg == "..":
			return "", fmt.Errorf("%w: path %q contains %q: paths may not leave or name their folder; rename it", ErrInvalid, p, seg)
		case strings.HasPrefix(seg, "."):
			return "", fmt.Errorf("%w: path %q contains the hidden name %q: rename it without the leading '.'", ErrInvalid, p, seg)
		case strings.TrimSpace(seg) != seg:
			return "", fmt.Errorf("%w: path %q has a name with leading or trailing spaces: rename it", ErrInvalid, p)
		case len(seg) > limit:
			return "", fmt.Errorf("%w: a name in path %q is %d bytes long, the most is %d: shorten it", ErrInvalid, p, len(seg), limit)
		}
	}
	// path.Clean is a no-op on a path that passed the checks above; keep it
	// as a second line of defence.
	if c := path.Clean(p); c != p {
		return "", fmt.Errorf("%w: path %q is not in canonical form (%q): rename it to that", ErrInvalid, p, c)
	}
	return p, nil
}

// RuneProblem says why r may not appear in a name, or "" when it may.
// Format characters (bidi overrides such as U+202E, zero-width spaces and
// joiners, the BOM) make a name read differently from what it is; spaces
// other than the ASCII one (no-break, ideographic, line and paragraph
// separators) make two names that look alike differ. The logs show such a
// character escaped, whatever it is part of.
func RuneProblem(r rune) string {
	switch {
	case unicode.IsControl(r):
		return "a control character"
	case unicode.Is(unicode.Cf, r):
		return "an invisible format character (bidi control, zero-width or BOM)"
	case unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || unicode.Is(unicode.Variation_Selector, r):
		return "an invisible character (a filler, joiner or variation selector)"
	case r != ' ' && (unicode.Is(unicode.Zs, r) || unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r)):
		return "a space character other than the ordinary space"
	case r == utf8.RuneError:
		return "the Unicode replacement character"
	}
	return ""
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

// MaxMetadataKeyLen bounds the keys of caller metadata.
const MaxMetadataKeyLen = 128

// reservedMetadataKeys are the names of the fields dab itself records for
// an asset (every JSON field of asset.Record but "price", which is how an
// uploader prices an asset). Caller metadata may not use them: a "sha256",
// "owner" or "listing" next to the real one would mislead whoever reads the
// record, the console or the object's S3 metadata.
func reservedMetadataKeys() []string {
	return []string{"id", "name", "type", "path", "s3_bucket", "s3_key", "size", "sha256", "content_type",
		"metadata", "owner", "listing", "created_at", "task_id", "spool_id", "source"}
}

// CheckMetadataKey validates one key of caller metadata: 1 to
// MaxMetadataKeyLen lower-case ASCII letters, digits, '-', '_' or '.' (it
// becomes an x-amz-meta-* header name on the object, which S3 lower-cases),
// and none of dab's own field names.
func CheckMetadataKey(k string) error {
	if k == "" || len(k) > MaxMetadataKeyLen {
		return fmt.Errorf("%w: metadata key %q: use 1 to %d characters", ErrInvalid, k, MaxMetadataKeyLen)
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("%w: metadata key %q: use lower-case ASCII letters, digits, '-', '_' and '.' (S3 keeps metadata names in lower case, so \"Price\" and \"price\" would collide)", ErrInvalid, k)
		}
	}
	for _, f := range reservedMetadataKeys() {
		if strings.EqualFold(k, f) {
			return fmt.Errorf("%w: metadata key %q is dab's own field of the record: choose another name (such as \"your_%s\")", ErrInvalid, k, f)
		}
	}
	return nil
}

// CheckMetadata validates every key of md (see CheckMetadataKey).
func CheckMetadata(md map[string]string) error {
	for k := range md {
		if err := CheckMetadataKey(k); err != nil {
			return err
		}
	}
	return nil
}

var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// ValidateBucket checks S3's bucket naming rules.
func ValidateBucket(b string) error {
	if !bucketName.MatchString(b) || strings.Contains(b, "..") {
		return fmt.Errorf("%q is not a valid S3 bucket name: use 3-63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit", b)
	}
	return nil
}
