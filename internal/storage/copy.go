package storage

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Server-side copies (imports from s3:// sources). The bytes never pass
// through the worker, yet dab keeps its two promises: it never overwrites an
// object, and it records the SHA-256 of what it stored.
//
//   - Never overwrite: CopyObject cannot be made conditional on every store
//     (versitygw ignores If-None-Match on a copy). A multipart upload can:
//     its parts are copied with UploadPartCopy and it is completed with
//     If-None-Match: *, exactly as a large upload is.
//   - Know the SHA-256: when the source carries a whole-object SHA-256 the
//     store keeps (x-amz-checksum-sha256, FULL_OBJECT), that is it. When it
//     does not (most objects: SDKs default to CRC checksums), the source is
//     first copied to a staging key of dab's own bucket with CopyObject and
//     x-amz-checksum-algorithm: SHA256, so the store computes the hash; the
//     staged copy is the multipart upload's source and is deleted afterwards.
//
// Every part copy names the source's ETag (x-amz-copy-source-if-match), so
// a source that changes half-way is noticed and the task retried, never
// stored as a mix of two versions.

// StagingPrefix is where sources without a SHA-256 are copied while the
// store hashes them. Asset keys start with a type (a lower-case letter), so
// they never fall under it.
const StagingPrefix = "_dab-staging/"

// copyObjectMax is the largest object one CopyObject may copy (S3's limit).
const copyObjectMax int64 = 5 << 30

// ErrCopyUnsupported means a server-side copy cannot be made (the store
// lacks a call, computes no SHA-256 on copies, or the object is too large to
// stage); the caller streams the source instead.
var ErrCopyUnsupported = errors.New("server-side copy not possible")

// ErrTooLarge means the source is larger than the caller's cap.
var ErrTooLarge = errors.New("source larger than allowed")

// ErrDigestMismatch means the source's SHA-256 is not the one the caller
// expected.
var ErrDigestMismatch = errors.New("source SHA-256 differs from the expected one")

// CopyInput is one server-side copy into the store.
type CopyInput struct {
	SourceBucket, SourceKey string
	// Key is the object key in dab's bucket.
	Key string
	// StagingKey is where a source without a SHA-256 is copied first (under
	// StagingPrefix, unique per task so a retry reuses it).
	StagingKey string
	// MaxBytes refuses larger sources (ErrTooLarge); 0 means no cap.
	MaxBytes int64
	// SHA256 (hex), when not empty, must be the source's (ErrDigestMismatch).
	SHA256 string
	// Describe returns the copy's content type and record metadata (see
	// EncodeMetadata) once the source's size, SHA-256 and content type are
	// known; the metadata must fit the store's limit with the SHA-256 dab adds.
	Describe func(size int64, sha256, sourceContentType string) (contentType string, meta map[string]string, err error)
}

// CopyResult says what was copied.
type CopyResult struct {
	PutResult
	ContentType string
	// Staged is true when the store had to hash a staged copy first.
	Staged bool
}

// CopyIn copies an object of any bucket these credentials may read into
// the store under in.Key, server-side, conditionally (see above). An
// object already under the key with the same SHA-256 and size is reported
// as Existed; one with other content is ErrConflict.
func (s *Store) CopyIn(ctx context.Context, in CopyInput) (CopyResult, error) {
	res := CopyResult{PutResult: PutResult{Bucket: s.bucket, Key: in.Key, Multipart: true}}
	if s.opts.ChecksumMode == ChecksumOff {
		// The copy needs the store's checksums (to read a SHA-256, and to
		// have one computed); a store that refuses checksum headers gets
		// none, and the caller streams.
		return res, fmt.Errorf("%w: DAB_S3_CHECKSUM=off: no checksum headers are sent", ErrCopyUnsupported)
	}
	head, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(in.SourceBucket), Key: aws.String(in.SourceKey), ChecksumMode: s3types.ChecksumModeEnabled,
	})
	if err != nil {
		return res, wrap("head", in.SourceBucket, in.SourceKey, err)
	}
	size, etag := aws.ToInt64(head.ContentLength), aws.ToString(head.ETag)
	res.Size = size
	if in.MaxBytes > 0 && size > in.MaxBytes {
		return res, fmt.Errorf("%w: s3://%s/%s is %d bytes, the cap is %d", ErrTooLarge, in.SourceBucket, in.SourceKey, size, in.MaxBytes)
	}
	if size == 0 {
		return res, fmt.Errorf("%w: the source is empty (a multipart upload cannot copy 0 bytes)", ErrCopyUnsupported)
	}
	if strings.Contains(in.SourceKey, "?") {
		// Escaped or not, some stores (versitygw) read a '?' in
		// x-amz-copy-source as the start of ?versionId=.
		return res, fmt.Errorf("%w: the source key holds a '?', which some stores read as a version in a copy", ErrCopyUnsupported)
	}
	srcBucket, srcKey := in.SourceBucket, in.SourceKey
	sum := wholeSHA256(head.ChecksumSHA256, head.ChecksumType, etag)
	if sum == "" {
		if !stagingKey.MatchString(in.StagingKey) {
			// The staged copy is written unconditionally and deleted: a key
			// that is not exactly a staging key could name an asset.
			return res, fmt.Errorf("storage: staging key %q is not a key StagingKeyFor makes", in.StagingKey)
		}
		if size > copyObjectMax {
			return res, fmt.Errorf("%w: the source has no SHA-256 and is larger than one CopyObject may stage (5 GiB)", ErrCopyUnsupported)
		}
		staged, stagedETag, err := s.stage(ctx, in, etag)
		if err != nil {
			return res, err
		}
		defer s.unstage(in.StagingKey)
		res.Staged, sum, etag = true, staged, stagedETag
		srcBucket, srcKey = s.bucket, in.StagingKey
	}
	res.SHA256 = sum
	if in.SHA256 != "" && in.SHA256 != sum {
		return res, fmt.Errorf("%w: the source's SHA-256 is %s, the request said %s", ErrDigestMismatch, sum, in.SHA256)
	}
	contentType, meta, err := in.Describe(size, sum, aws.ToString(head.ContentType))
	res.ContentType = contentType
	if err != nil {
		return res, err
	}
	target := PutInput{Key: in.Key, Size: size, SHA256: sum}
	if done, err := s.existing(ctx, target, &res.PutResult); err != nil || done {
		return res, err
	}
	err = s.copyMultipart(ctx, in.Key, res.ContentType, withSHA256(meta, sum), srcBucket, srcKey, etag, size)
	if isPreconditionFailed(err) {
		done, herr := s.existing(ctx, target, &res.PutResult)
		if herr != nil {
			return res, herr
		}
		if done {
			return res, nil
		}
		// Nothing under the key yet: a concurrent write that did not finish
		// (409 ConditionalRequestConflict) or a source changed under the
		// part copies. A retry decides.
		var se *Error
		if errors.As(err, &se) {
			se.Permanent, se.NeedsNewFile = false, false
		}
		return res, err
	}
	if err != nil {
		return res, err
	}
	return res, s.verify(ctx, target, &res.PutResult)
}

// wholeSHA256 returns the hex SHA-256 of a whole object from its checksum
// headers, or "" when the store holds none or only a hash of part hashes.
// A checksum of no stated type counts only for an object not uploaded in
// parts (an ETag without "-N"): otherwise it may be a hash of hashes.
func wholeSHA256(b64 *string, kind s3types.ChecksumType, etag string) string {
	v := aws.ToString(b64)
	switch {
	case v == "" || strings.Contains(v, "-"):
		return ""
	case kind == s3types.ChecksumTypeFullObject:
	case kind == "" && !strings.Contains(etag, "-"):
	default:
		return ""
	}
	raw, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(raw) != 32 {
		return ""
	}
	return hex.EncodeToString(raw)
}

func withSHA256(meta map[string]string, sum string) map[string]string {
	out := make(map[string]string, len(meta)+1)
	for k, v := range meta {
		out[k] = v
	}
	out[MetaSHA256] = sum
	return out
}

// stage copies the source to in.StagingKey, asking the store for its
// SHA-256. It returns the hex SHA-256 and the staged object's ETag.
func (s *Store) stage(ctx context.Context, in CopyInput, etag string) (string, string, error) {
	out, err := s.api.CopyObject(ctx, &s3.CopyObjectInput{
		Bucket: aws.String(s.bucket), Key: aws.String(in.StagingKey),
		CopySource: aws.String(copySource(in.SourceBucket, in.SourceKey)), CopySourceIfMatch: aws.String(etag),
		ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256,
	})
	if err != nil {
		// The copy may have finished on the store although the answer was
		// lost (a cancelled context, a cut connection).
		s.unstage(in.StagingKey)
		return "", "", copyError("stage", in.SourceBucket, in.SourceKey, err)
	}
	var sum, stagedETag string
	if r := out.CopyObjectResult; r != nil {
		stagedETag = aws.ToString(r.ETag)
		sum = wholeSHA256(r.ChecksumSHA256, r.ChecksumType, stagedETag)
	}
	if sum == "" || stagedETag == "" {
		h, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{
			Bucket: aws.String(s.bucket), Key: aws.String(in.StagingKey), ChecksumMode: s3types.ChecksumModeEnabled,
		})
		if err != nil {
			s.unstage(in.StagingKey)
			return "", "", wrap("head", s.bucket, in.StagingKey, err)
		}
		stagedETag = aws.ToString(h.ETag)
		sum = wholeSHA256(h.ChecksumSHA256, h.ChecksumType, stagedETag)
	}
	if sum == "" {
		s.unstage(in.StagingKey)
		return "", "", fmt.Errorf("%w: the store computed no SHA-256 for the staged copy", ErrCopyUnsupported)
	}
	return sum, stagedETag, nil
}

// unstage deletes a staged copy, even when the task's context is gone.
// Best effort: a copy left behind (a worker killed in between, a failed
// delete) is replaced and deleted by the task's next attempt if there is
// one; `dab reconcile` reports leftovers, and the bucket's lifecycle rule
// for StagingPrefix (deploy/) expires them.
func (s *Store) unstage(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	s.api.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
}

// copyMultipart copies size bytes of srcBucket/srcKey (at ETag etag) to key
// in part copies, completing with If-None-Match: *.
func (s *Store) copyMultipart(ctx context.Context, key, contentType string, meta map[string]string, srcBucket, srcKey, etag string, size int64) error {
	created, err := s.api.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), ContentType: aws.String(contentType), Metadata: meta,
	})
	if err != nil {
		return wrap("copy", s.bucket, key, err)
	}
	in := PutInput{Key: key}
	uploadID := aws.ToString(created.UploadId)
	parts := planParts(size, s.opts.CopyPartSize)
	feed := func(send func(part) bool) error {
		for _, p := range parts {
			if !send(p) {
				break
			}
		}
		return nil
	}
	completed, err := sendParts(ctx, s.opts.PartConcurrency, feed, func(ctx context.Context, p part) (s3types.CompletedPart, error) {
		out, err := s.api.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
			Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID), PartNumber: aws.Int32(p.number),
			CopySource:        aws.String(copySource(srcBucket, srcKey)),
			CopySourceRange:   aws.String("bytes=" + strconv.FormatInt(p.offset, 10) + "-" + strconv.FormatInt(p.offset+p.size-1, 10)),
			CopySourceIfMatch: aws.String(etag),
		})
		if err != nil {
			return s3types.CompletedPart{}, copyError("copy", srcBucket, srcKey, err)
		}
		if out.CopyPartResult == nil || out.CopyPartResult.ETag == nil {
			return s3types.CompletedPart{}, fmt.Errorf("storage: copy of part %d of %s: the store answered without the part's ETag", p.number, key)
		}
		return s3types.CompletedPart{PartNumber: aws.Int32(p.number), ETag: out.CopyPartResult.ETag}, nil
	})
	if isBareContextErr(err) {
		err = wrap("copy", s.bucket, key, err)
	}
	if err != nil {
		s.abort(in, uploadID)
		return err
	}
	_, err = s.api.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID),
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: completed},
		IfNoneMatch:     aws.String("*"),
	})
	if err != nil {
		s.abort(in, uploadID)
		return wrap("copy", s.bucket, key, err)
	}
	return nil
}

// copyError classifies the error of a copy from a source: a store without
// the call is ErrCopyUnsupported (stream instead); a failed
// x-amz-copy-source-if-match means the source changed under the copy, which
// a retry (with a fresh look at the source) fixes.
func copyError(op, bucket, key string, err error) error {
	werr := wrap(op, bucket, key, err)
	var se *Error
	if !errors.As(werr, &se) {
		return werr
	}
	switch {
	case se.Status == http.StatusNotImplemented || se.Code == "NotImplemented":
		return fmt.Errorf("%w: %w", ErrCopyUnsupported, werr)
	case op == "stage" && (se.Code == "InvalidArgument" || se.Code == "InvalidRequest"):
		// A store that refuses x-amz-checksum-algorithm on a copy.
		return fmt.Errorf("%w: %w", ErrCopyUnsupported, werr)
	case se.Status == http.StatusPreconditionFailed:
		se.Permanent, se.NeedsNewFile = false, false
		se.Hint = "the source changed during the copy: trying again"
	}
	return werr
}

// copySource is the x-amz-copy-source value: the bucket and the key, the
// key URL-encoded except for its slashes.
func copySource(bucket, key string) string {
	var b strings.Builder
	b.WriteString(bucket)
	b.WriteByte('/')
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte("-._~/", c) >= 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// stagingKey is the shape of every key StagingKeyFor makes: one segment
// of letters, digits, '-' and '_' below the prefix (no dot segments).
var stagingKey = regexp.MustCompile(`^` + regexp.QuoteMeta(StagingPrefix) + `imports/[A-Za-z0-9_-]{1,200}$`)

// StagingKeyFor is the staging key of one task: a retry of the task reuses
// (and replaces) it. Characters other than letters, digits, '-' and '_'
// become '-'; a long ID is cut to its first 200.
func StagingKeyFor(taskID string) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, taskID)
	if safe == "" {
		safe = "-"
	}
	if len(safe) > 200 {
		safe = safe[:200]
	}
	return StagingPrefix + "imports/" + safe
}
