package task

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/netguard"
)

// TypeImport banks a file that is not on a dab host: an object in S3
// (s3://bucket/key) or an https:// URL. Any worker runs it.
const TypeImport = "dab:import"

// QueueImports carries import tasks; every worker serves it (no host).
const QueueImports = "imports"

// How an import's bytes reached the store (UploadResult.Method).
const (
	// ImportCopied: copied server-side; the source carried its SHA-256.
	ImportCopied = "copied"
	// ImportStaged: copied server-side through a staging copy on which the
	// store computed the SHA-256.
	ImportStaged = "staged"
	// ImportStreamed: read through the worker (https:// sources, and s3://
	// sources the store cannot copy server-side).
	ImportStreamed = "streamed"
)

// ImportPayload is the payload of TypeImport.
type ImportPayload struct {
	// Key is the producer's idempotency key: the task ID comes from it, so
	// a retried request imports once.
	Key string `json:"key"`
	// Source is s3://bucket/key or an https:// URL.
	Source string `json:"source"`
	// Type and Path say where the asset goes: the object key is
	// <type>/<path>, as for every upload.
	Type string `json:"type"`
	Path string `json:"path"`
	// SHA256, when set (hex), is what the source must hash to.
	SHA256 string `json:"sha256,omitempty"`
	// Metadata is the caller's metadata (price and the like).
	Metadata map[string]string `json:"metadata,omitempty"`
}

// ImportTaskID is the task ID of the import with idempotency key key: a
// digest, so that any key (of any length or alphabet) makes a valid ID.
func ImportTaskID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "import-" + hex.EncodeToString(sum[:16])
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ImportKeyMax is the longest idempotency key of an import.
const ImportKeyMax = 200

// Validate checks the payload's shape: a key, an s3:// or https:// (or
// http://, which the worker refuses unless allowed) source, a type and
// path that make a valid object key, a SHA-256 in lower-case hex and
// metadata dab accepts. Errors say what to fix.
func (p ImportPayload) Validate() error {
	switch {
	case p.Key == "" || len(p.Key) > ImportKeyMax:
		return fmt.Errorf("%w: key: give an idempotency key of 1 to %d bytes", ErrBadPayload, ImportKeyMax)
	case !strings.HasPrefix(p.Source, "s3://") && !strings.HasPrefix(p.Source, "https://") && !strings.HasPrefix(p.Source, "http://"):
		return fmt.Errorf("%w: source: give s3://bucket/key or an https:// URL", ErrBadPayload)
	case p.SHA256 != "" && !sha256Hex.MatchString(p.SHA256):
		return fmt.Errorf("%w: sha256: give 64 lower-case hex digits", ErrBadPayload)
	}
	if strings.HasPrefix(p.Source, "s3://") {
		bucket, key, err := SplitS3(p.Source)
		if err != nil {
			return err
		}
		if err := naming.ValidateBucket(bucket); err != nil {
			return fmt.Errorf("%w: source: %v", ErrBadPayload, err)
		}
		for _, seg := range strings.Split(key, "/") {
			if seg == "." || seg == ".." {
				// Stores that keep objects as files resolve them (or refuse
				// them); AWS keeps them literally: the same source would
				// name different objects.
				return fmt.Errorf("%w: source: the key %q has a %q segment: name the object without . or .. segments", ErrBadPayload, key, seg)
			}
		}
	} else if err := netguard.CheckURLSyntax(p.Source); err != nil {
		return fmt.Errorf("%w: source: %v", ErrBadPayload, err)
	}
	if _, err := naming.Key(p.Type, p.Path); err != nil {
		return fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if err := naming.CheckMetadata(p.Metadata); err != nil {
		return fmt.Errorf("%w: metadata: %v", ErrBadPayload, err)
	}
	return nil
}

// ErrSourceRefused means an import may not read its s3:// source.
var ErrSourceRefused = errors.New("import source refused")

// S3Sources says which buckets s3:// imports may read: the buckets listed
// (DAB_IMPORT_S3_BUCKETS; "*" for any bucket dab's credentials can read),
// never dab's own. Imports read with dab's credentials, so without a list
// anyone who may import could bank (and then buy and download) any object
// those credentials can read: other buckets of the organisation, or the
// assets and journal of dab's own bucket.
type S3Sources struct {
	Buckets []string
	// Own is dab's bucket.
	Own string
}

// Check refuses an s3:// source outside s; other sources pass (the URL
// guard checks them). Errors wrap ErrSourceRefused and say what to change.
func (s S3Sources) Check(source string) error {
	if !strings.HasPrefix(source, "s3://") {
		return nil
	}
	bucket, _, err := SplitS3(source)
	if err != nil {
		return err
	}
	if bucket == s.Own {
		return fmt.Errorf("%w: s3://%s is dab's own bucket, which holds assets and the ledger's journal: import from the bucket the file came from", ErrSourceRefused, bucket)
	}
	wildcard := false
	for _, b := range s.Buckets {
		if b == bucket {
			return nil
		}
		wildcard = wildcard || b == "*"
	}
	if wildcard && isAccessPointAlias(bucket) {
		// An alias names an access point, which may front any bucket,
		// dab's own too: "*" cannot tell, so an alias must be named.
		return fmt.Errorf("%w: %s is an S3 access point alias, which may stand for any bucket (dab's own too): name it in DAB_IMPORT_S3_BUCKETS (on the API server and the workers) to allow imports through it", ErrSourceRefused, bucket)
	}
	if wildcard {
		return nil
	}
	return fmt.Errorf("%w: bucket %s is not in DAB_IMPORT_S3_BUCKETS: add it there (on the API server and the workers) to allow imports from it", ErrSourceRefused, bucket)
}

// isAccessPointAlias says whether name is an S3 access point alias (AWS:
// "<name>-<suffix>-s3alias"; S3 on Outposts: "--op-s3"; Object Lambda:
// "--ol-s3"), which S3 accepts wherever a bucket name goes.
func isAccessPointAlias(name string) bool {
	for _, suffix := range []string{"-s3alias", "--op-s3", "--ol-s3"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

// RedactSource is a source as logs and errors show it: an s3:// source as
// given (it carries no secret, and a key may hold '?' or '#'), a URL
// without its user info and query (a presigned URL's signature).
func RedactSource(source string) string {
	if strings.HasPrefix(source, "s3://") {
		return source
	}
	return netguard.Redact(source)
}

// SplitS3 splits s3://bucket/key.
func SplitS3(src string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(src, "s3://")
	bucket, key, _ = strings.Cut(rest, "/")
	if !ok || bucket == "" || key == "" {
		return "", "", fmt.Errorf("%w: source %q: give s3://bucket/key", ErrBadPayload, src)
	}
	return bucket, key, nil
}

// NewImport builds the task of an import.
func NewImport(p ImportPayload, opts ...asynq.Option) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("task: encode import payload: %w", err)
	}
	base := []asynq.Option{
		asynq.TaskID(ImportTaskID(p.Key)),
		asynq.Queue(QueueImports),
		asynq.MaxRetry(DefaultMaxRetry),
		asynq.Retention(DefaultRetention),
	}
	return asynq.NewTask(TypeImport, b, append(base, opts...)...), nil
}

// DecodeImport reads an import payload; errors wrap ErrBadPayload.
func DecodeImport(b []byte) (ImportPayload, error) {
	var p ImportPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("%w: import payload is not the JSON object {\"key\", \"source\", \"type\", \"path\", ...}: %v", ErrBadPayload, err)
	}
	return p, p.Validate()
}
