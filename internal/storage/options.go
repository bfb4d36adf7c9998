package storage

import "time"

// Checksum modes of uploads (Options.ChecksumMode).
const (
	// ChecksumSHA256 sends each object's SHA-256 to S3 (x-amz-checksum-sha256)
	// so the store verifies the bytes it receives.
	ChecksumSHA256 = "sha256"
	// ChecksumOff sends no checksum headers, for S3-compatible stores that
	// reject them; dab still records the SHA-256 in object metadata and
	// verifies size and metadata after the upload.
	ChecksumOff = "off"
)

// Defaults and limits of multipart uploads.
const (
	// MultipartThresholdDefault: objects of 16 MiB or more go up in parts.
	MultipartThresholdDefault int64 = 16 << 20
	// PartSizeDefault is 8 MiB: small enough to resume cheaply, large
	// enough that a file needs few requests.
	PartSizeDefault int64 = 8 << 20
	// PartSizeMin and PartSizeMax are S3's limits on a part (all but the
	// last part of an upload).
	PartSizeMin int64 = 5 << 20
	PartSizeMax int64 = 5 << 30
	// PartConcurrencyDefault is the number of parts of one object sent at once.
	PartConcurrencyDefault = 4
	// CopyPartSizeDefault is the part size of server-side copies (imports):
	// large, since no bytes pass through dab.
	CopyPartSizeDefault int64 = 512 << 20
)

// Lifetimes of presigned URLs (URLOptions.TTL).
const (
	// URLTTLDefault is the lifetime of presigned download URLs
	// (DAB_DOWNLOAD_TTL): long enough to start a large download (S3 checks
	// the signature when a transfer starts, not while it runs) and short
	// enough that a URL that leaks is soon worthless.
	URLTTLDefault = 5 * time.Minute
	// URLTTLMin: SigV4 counts whole seconds.
	URLTTLMin = time.Second
	// URLTTLMax is S3's limit: it refuses presigned URLs that live longer
	// than 7 days.
	URLTTLMax = 7 * 24 * time.Hour
)

// Options configure a Store and the S3 client NewClient builds. A zero
// ChecksumMode, MultipartThreshold, PartSize, PartConcurrency or CopyPartSize takes the
// default named beside it.
type Options struct {
	// Bucket holds the objects (required).
	Bucket string
	// Region of the bucket; empty means the AWS SDK's (AWS_REGION, the
	// profile), or us-east-1 when Endpoint is set.
	Region string
	// AccessKeyID, SecretAccessKey and SessionToken are static credentials;
	// without an AccessKeyID the AWS SDK's default chain is used (env,
	// shared profiles, SSO, instance or task roles).
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// Endpoint is an S3-compatible endpoint URL; empty means AWS.
	Endpoint string
	// PathStyle addresses the bucket as endpoint/bucket (most S3-compatible
	// stores) instead of bucket.endpoint.
	PathStyle bool
	// ChecksumMode is ChecksumSHA256 (the default) or ChecksumOff.
	ChecksumMode string
	// MultipartThreshold: objects of this size or larger go up in parts.
	// Default MultipartThresholdDefault.
	MultipartThreshold int64
	// PartSize of multipart uploads, PartSizeMin to PartSizeMax (a file
	// that would need more than 10,000 parts gets larger ones). Default
	// PartSizeDefault.
	PartSize int64
	// PartConcurrency is the number of parts of one object sent at once
	// (uploaded or copied). Default PartConcurrencyDefault.
	PartConcurrency int
	// CopyPartSize is the part size of server-side copies, PartSizeMin to
	// PartSizeMax. Default CopyPartSizeDefault.
	CopyPartSize int64
}

// withDefaults fills the zero values that have a default.
func (o Options) withDefaults() Options {
	if o.ChecksumMode == "" {
		o.ChecksumMode = ChecksumSHA256
	}
	if o.MultipartThreshold <= 0 {
		o.MultipartThreshold = MultipartThresholdDefault
	}
	if o.PartSize <= 0 {
		o.PartSize = PartSizeDefault
	}
	if o.PartConcurrency <= 0 {
		o.PartConcurrency = PartConcurrencyDefault
	}
	if o.CopyPartSize <= 0 {
		o.CopyPartSize = CopyPartSizeDefault
	}
	o.CopyPartSize = min(max(o.CopyPartSize, PartSizeMin), PartSizeMax)
	return o
}
