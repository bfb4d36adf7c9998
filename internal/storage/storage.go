// Package storage puts spool files into S3 (or an S3-compatible store) without
// ever overwriting an object: uploads are conditional (If-None-Match: *), carry
// the file's SHA-256 and are verified after they finish. An existing object
// with the same SHA-256 is an idempotent success; with another SHA-256 it is
// ErrConflict.
package storage

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// MetaSHA256 is the object metadata key (x-amz-meta-sha256) holding the
// hex SHA-256 of the object's bytes.
const MetaSHA256 = "sha256"

// S3API is the narrow set of S3 calls dab makes; *s3.Client implements it.
// The IAM policy in deploy/ grants exactly these (s3:PutObject covers the
// multipart calls, s3:GetObject covers HeadObject, s3:ListBucket covers
// ListObjectsV2, s3:ListMultipartUploadParts covers ListParts, CopyObject
// and UploadPartCopy need s3:PutObject here and s3:GetObject on the source,
// DeleteObject is only for staged copies under StagingPrefix); presigned
// downloads are PresignAPI's.
type S3API interface {
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	CreateMultipartUpload(context.Context, *s3.CreateMultipartUploadInput, ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	UploadPart(context.Context, *s3.UploadPartInput, ...func(*s3.Options)) (*s3.UploadPartOutput, error)
	CompleteMultipartUpload(context.Context, *s3.CompleteMultipartUploadInput, ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(context.Context, *s3.AbortMultipartUploadInput, ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
	ListParts(context.Context, *s3.ListPartsInput, ...func(*s3.Options)) (*s3.ListPartsOutput, error)
	CopyObject(context.Context, *s3.CopyObjectInput, ...func(*s3.Options)) (*s3.CopyObjectOutput, error)
	UploadPartCopy(context.Context, *s3.UploadPartCopyInput, ...func(*s3.Options)) (*s3.UploadPartCopyOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// abortTimeout bounds the clean-up of a failed multipart upload.
const abortTimeout = 30 * time.Second

// Store uploads to one bucket.
type Store struct {
	api    S3API
	bucket string
	opts   Options
	// listPage overrides List's page size (tests); 0 means listPageSize.
	listPage int32
	// direct sends small PUTs without the SDK's pipeline (directput.go);
	// nil when api is not an *s3.Client or the bucket needs the SDK.
	direct *directPut
}

// IdleConnsMax is how many idle connections to the store the S3 client
// keeps for reuse: more than the uploads (and their parts) one worker runs
// at once.
const IdleConnsMax = 1024

// NewClient builds an S3 client from o's region, endpoint, addressing and
// credentials, or the AWS SDK's default credential chain (env, shared
// profiles, SSO, instance or task roles) when o has no access key.
func NewClient(ctx context.Context, c Options) (*s3.Client, error) {
	opts := []func(*awsconfig.LoadOptions) error{
		// dab sends the checksums it wants itself (see Put); the SDK's default
		// CRC32 headers are refused by some S3-compatible stores.
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if c.Region != "" {
		opts = append(opts, awsconfig.WithRegion(c.Region))
	}
	// Go keeps 2 idle connections per host by default, the SDK 10: with
	// more uploads than that running at once, every request past them
	// dials a new connection and closes it after (a TCP handshake, and a
	// TLS one on real S3, per small file).
	opts = append(opts, awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns = IdleConnsMax
		t.MaxIdleConnsPerHost = IdleConnsMax
		// Room for a small object's whole PUT, so that it leaves in one
		// write (see directPutInMemoryMax); Go's default is 4 KiB.
		t.WriteBufferSize = requestBufferSize
	})))
	if c.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("storage: load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		if c.Endpoint == "" {
			return nil, errors.New("storage: AWS_REGION is not set: set it (or AWS_DEFAULT_REGION, or a region in your AWS profile) to the bucket's region")
		}
		awsCfg.Region = "us-east-1" // S3-compatible stores mostly ignore it, but SigV4 needs one
	}
	return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
	}), nil
}

// New returns a Store for o.Bucket using api.
func New(api S3API, o Options) *Store {
	o = o.withDefaults()
	s := &Store{api: api, bucket: o.Bucket, opts: o}
	if c, ok := api.(*s3.Client); ok {
		s.direct = newDirectPut(c, o.Bucket)
	}
	return s
}

// Bucket is the store's bucket.
func (s *Store) Bucket() string { return s.bucket }

// Check verifies that the bucket exists and the credentials may list it. It
// uses a GET (ListObjectsV2) rather than HeadBucket because a HEAD error has
// no body, and the body's code is what tells a wrong secret from a missing bucket.
func (s *Store) Check(ctx context.Context) error {
	_, err := s.api.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), MaxKeys: aws.Int32(1)})
	return wrap("check", s.bucket, "", err)
}

// PutInput is one object to store.
type PutInput struct {
	Key         string
	File        *os.File // read from offset 0
	Size        int64
	SHA256      string // hex, as recorded in the spool manifest
	ContentType string
	Metadata    map[string]string // extra x-amz-meta-* values
	// State lets a retried multipart upload resume; nil starts over each time.
	State UploadState
	// Progress, when set, is called with the size of each part sent.
	Progress func(bytes int64)
}

// PutResult says where the object is and whether it was there already.
type PutResult struct {
	Bucket, Key string
	Size        int64
	SHA256      string
	ETag        string
	// Existed is true when the object was already in the bucket with the same
	// content (a re-run, or the same file uploaded twice).
	Existed bool
	// Multipart is true when the object went up in parts.
	Multipart bool
}

// Put stores in.File under in.Key unless the key exists. It is idempotent:
// running it again after a success returns Existed=true.
func (s *Store) Put(ctx context.Context, in PutInput) (PutResult, error) {
	res := PutResult{Bucket: s.bucket, Key: in.Key, Size: in.Size, SHA256: in.SHA256}
	meta := withSHA256(in.Metadata, in.SHA256) // what verification and idempotency rely on: never from the caller
	var err error
	if in.Size >= s.opts.MultipartThreshold {
		res.Multipart = true
		// A multipart upload learns that the key exists only at the end, so
		// look first: re-runs of big uploads must not send gigabytes again.
		// A HEAD error other than a conflict carries no detail (no body); the
		// upload below then fails with the store's precise error code.
		done, herr := s.existing(ctx, in, &res)
		if errors.Is(herr, ErrConflict) {
			return res, herr
		}
		if herr == nil && done {
			return res, nil
		}
		err = s.putMultipart(ctx, in, meta)
	} else {
		var verified bool
		res.ETag, verified, err = s.putSingle(ctx, in, meta)
		if unanswered(err) {
			// Some stores answer a conditional PUT of a key that exists
			// (412) before they read the body, and close the connection: the
			// client fails writing the body and never sees the answer (a
			// re-run of a file of a few hundred KiB or more). Look before
			// sending it again.
			done, herr := s.existing(ctx, in, &res)
			switch {
			case errors.Is(herr, ErrConflict):
				return res, herr
			case herr == nil && done:
				return res, nil
			case herr == nil && errors.Is(err, errUnanswered):
				// Not there: the direct PUT's connection failed; the SDK,
				// which retries, sends it.
				res.ETag, verified, err = s.putSDK(ctx, in, meta)
			}
		}
		if err == nil && verified {
			return res, nil
		}
	}
	if isPreconditionFailed(err) {
		done, herr := s.existing(ctx, in, &res)
		if herr != nil {
			return res, herr
		}
		if done {
			return res, nil
		}
		// The object vanished between the two calls; let the task retry.
		return res, wrap("put", s.bucket, in.Key, err)
	}
	if err != nil {
		return res, err
	}
	return res, s.verify(ctx, in, &res)
}

// existing compares the object under in.Key (if any) with in. It returns
// done=true for the same content, ErrConflict for other content, and
// done=false when there is no object.
func (s *Store) existing(ctx context.Context, in PutInput, res *PutResult) (bool, error) {
	out, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(in.Key)})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, wrap("head", s.bucket, in.Key, err)
	}
	theirs := out.Metadata[MetaSHA256]
	if theirs == in.SHA256 && aws.ToInt64(out.ContentLength) == in.Size {
		res.Existed, res.ETag = true, aws.ToString(out.ETag)
		return true, nil
	}
	if theirs == "" {
		theirs = "unknown (not written by dab)"
	}
	return false, &Error{
		Op: "put", Bucket: s.bucket, Key: in.Key, Code: "Conflict", Status: http.StatusConflict, Permanent: true, NeedsNewFile: true,
		Hint: fmt.Sprintf("s3://%s/%s already holds different content (sha256 %s, %d bytes; this file: sha256 %s, %d bytes): dab never overwrites; rename the file or remove the old object first",
			s.bucket, in.Key, theirs, aws.ToInt64(out.ContentLength), in.SHA256, in.Size),
		Err: ErrConflict,
	}
}

// putSingle stores a small file in one request. It returns verified=true
// when the store confirmed the SHA-256 it checked the body against, so no
// separate verification request is needed.
func (s *Store) putSingle(ctx context.Context, in PutInput, meta map[string]string) (etag string, verified bool, err error) {
	if s.direct != nil && in.Size <= DirectPutMax {
		etag, verified, err := s.direct.put(ctx, s.bucket, in, meta, s.opts.ChecksumMode == ChecksumSHA256)
		if !errors.Is(err, errDirectPutDeclined) {
			return etag, verified, err
		}
	}
	return s.putSDK(ctx, in, meta)
}

// errUnanswered: a PUT's connection failed before an answer came back.
var errUnanswered = errors.New("no answer from the store")

// unanswered reports whether err is a PUT that got no answer (a broken
// connection, not the caller's context): the object may or may not be in
// the store.
func unanswered(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var se *Error
	return errors.Is(err, errUnanswered) || errors.As(err, &se) && se.Status == 0 && se.Code == ""
}

// putSDK is putSingle through the SDK's PutObject.
func (s *Store) putSDK(ctx context.Context, in PutInput, meta map[string]string) (etag string, verified bool, err error) {
	if _, err := in.File.Seek(0, io.SeekStart); err != nil {
		return "", false, fmt.Errorf("storage: rewind %s: %w", in.Key, err)
	}
	input := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(in.Key),
		Body:          in.File,
		ContentLength: aws.Int64(in.Size),
		ContentType:   aws.String(in.ContentType),
		Metadata:      meta,
		IfNoneMatch:   aws.String("*"),
	}
	if s.opts.ChecksumMode == ChecksumSHA256 {
		// The store hashes what it receives and refuses the object (BadDigest)
		// unless it matches the hash taken when the file was spooled.
		raw, err := hex.DecodeString(in.SHA256)
		if err != nil {
			return "", false, fmt.Errorf("storage: manifest sha256 %q of %s is not hex: %w", in.SHA256, in.Key, err)
		}
		input.ChecksumSHA256 = aws.String(base64.StdEncoding.EncodeToString(raw))
	}
	// The manifest's SHA-256 is the body's hash: the signer need not read
	// the file to compute it, and the store refuses a body that differs.
	out, err := s.api.PutObject(ctx, input, withPayloadHash(in.SHA256))
	if err != nil {
		return "", false, wrap("put", s.bucket, in.Key, err)
	}
	verified = input.ChecksumSHA256 != nil && aws.ToString(out.ChecksumSHA256) == aws.ToString(input.ChecksumSHA256)
	return aws.ToString(out.ETag), verified, nil
}

// verify checks the stored object's size and recorded SHA-256.
func (s *Store) verify(ctx context.Context, in PutInput, res *PutResult) error {
	out, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(in.Key)})
	if err != nil {
		return wrap("verify", s.bucket, in.Key, err)
	}
	if n := aws.ToInt64(out.ContentLength); n != in.Size || out.Metadata[MetaSHA256] != in.SHA256 {
		return &Error{Op: "verify", Bucket: s.bucket, Key: in.Key, Code: "VerifyFailed",
			Hint: fmt.Sprintf("stored object has %d bytes and sha256 %q, expected %d bytes and %s", n, out.Metadata[MetaSHA256], in.Size, in.SHA256)}
	}
	res.ETag = aws.ToString(out.ETag)
	return nil
}

// Get opens an object for reading (used by tests, benchmarks and `dab assets get`).
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	body, n, _, err := s.GetFrom(ctx, s.bucket, key)
	return body, n, err
}

func isNotFound(err error) bool {
	var nf *s3types.NotFound
	var nsk *s3types.NoSuchKey
	if errors.As(err, &nf) || errors.As(err, &nsk) {
		return true
	}
	var se *Error
	return errors.As(wrap("", "", "", err), &se) && (se.Status == http.StatusNotFound && se.Code != "NoSuchBucket")
}

func isPreconditionFailed(err error) bool {
	var se *Error
	if !errors.As(err, &se) {
		return false
	}
	return se.Status == http.StatusPreconditionFailed || se.Code == "PreconditionFailed" ||
		// Some stores answer a concurrent conditional write with 409.
		se.Code == "ConditionalRequestConflict"
}

// String describes the store for logs and `dab config`.
func (s *Store) String() string {
	ep := s.opts.Endpoint
	if ep == "" {
		ep = "aws"
	}
	return "s3://" + s.bucket + " at " + ep + " (checksum " + s.opts.ChecksumMode + ", multipart from " + strconv.FormatInt(s.opts.MultipartThreshold, 10) + " bytes)"
}

// GetFrom opens an object of any bucket these credentials may read (an
// import's source), with its size and content type.
func (s *Store) GetFrom(ctx context.Context, bucket, key string) (io.ReadCloser, int64, string, error) {
	out, err := s.api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, 0, "", wrap("get", bucket, key, err)
	}
	return out.Body, aws.ToInt64(out.ContentLength), aws.ToString(out.ContentType), nil
}
