package storage

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// ErrConflict means the key holds an object with different content. dab never
// overwrites it.
var ErrConflict = errors.New("object exists with different content")

// ErrChanged means the bytes read from the spool file while uploading do not
// match the SHA-256 recorded when it was spooled.
var ErrChanged = errors.New("spool file changed after it was spooled")

// Error is an S3 failure with what dab knows about it: the S3 error code, the
// HTTP status, whether retrying can help, and a hint that names the fix.
type Error struct {
	Op     string // put, head, check, ...
	Bucket string
	Key    string
	Code   string // S3 error code, such as SignatureDoesNotMatch
	Status int    // HTTP status, 0 when no response came back
	// Permanent is true when retrying the same request cannot succeed until
	// someone changes configuration or data.
	Permanent bool
	// NeedsNewFile is true for a permanent failure that no configuration
	// change can fix: the file itself must change (be renamed, or spooled
	// again). Storage decides it where it builds the error; callers need
	// not know S3's codes.
	NeedsNewFile bool
	Hint         string
	Err          error
}

func (e *Error) Error() string {
	where := "s3://" + e.Bucket
	if e.Key != "" {
		where += "/" + e.Key
	}
	msg := fmt.Sprintf("s3 %s %s", e.Op, where)
	if e.Code != "" {
		msg += ": " + e.Code
	}
	if e.Hint != "" {
		msg += ": " + e.Hint
	}
	if e.Err != nil {
		msg += " (" + e.Err.Error() + ")"
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err is an S3 failure that retrying cannot fix.
func IsPermanent(err error) bool {
	var se *Error
	return errors.As(err, &se) && se.Permanent
}

// permanentHints are the S3 error codes that need a person to change
// something, with the message that says what.
func permanentHint(code, bucket string) (string, bool) {
	switch code {
	case "SignatureDoesNotMatch":
		return "the secret key is wrong: check AWS_SECRET_ACCESS_KEY (it must belong to AWS_ACCESS_KEY_ID)", true
	case "InvalidAccessKeyId", "XAdminUserNotFound": // versitygw says the latter
		return "the access key does not exist at this store: check AWS_ACCESS_KEY_ID (and AWS_ENDPOINT_URL_S3 if you use an S3-compatible store)", true
	case "AccessDenied", "Forbidden", "AllAccessDisabled":
		return fmt.Sprintf("the credentials may not do this in bucket %q: grant dab's IAM policy (deploy/) or check the credentials", bucket), true
	case "NoSuchBucket":
		return fmt.Sprintf("bucket %q does not exist: create it or fix AWS_S3_BUCKET", bucket), true
	case "InvalidBucketName":
		return fmt.Sprintf("%q is not a valid bucket name: fix AWS_S3_BUCKET", bucket), true
	case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
		return fmt.Sprintf("bucket %q is in another region: set AWS_REGION to the bucket's region", bucket), true
	case "ExpiredToken", "InvalidToken", "TokenRefreshRequired":
		return "the session token has expired or is invalid: renew the credentials (AWS_SESSION_TOKEN, SSO login)", true
	case "EntityTooLarge":
		return "the object is larger than the store accepts", true
	case "KeyTooLongError":
		return "the key is longer than the store accepts: shorten the file's name or folders", true
	case "InvalidArgument", "InvalidRequest", "NotImplemented", "XAmzContentSHA256Mismatch":
		return "the store refused the request; if it rejects checksum headers, set DAB_S3_CHECKSUM=off", true
	}
	return "", false
}

// needsNewFile reports whether a permanent S3 error code is about the object
// itself (its size, its name) rather than about configuration.
func needsNewFile(code string) bool {
	switch code {
	case "EntityTooLarge", "KeyTooLongError",
		// Stores on a file system (versitygw's posix backend) cannot hold
		// both "a/b" and "a/b/c": the file needs another name.
		"ObjectParentIsFile", "ExistingObjectIsDirectory":
		return true
	}
	return false
}

// changed is the error of a spool file whose bytes are not those its
// manifest describes; what says how they differ.
func changed(bucket, key, what string) *Error {
	return &Error{Op: "put", Bucket: bucket, Key: key, Code: "SpoolChanged", Permanent: true, NeedsNewFile: true, Err: ErrChanged,
		Hint: what + ": the spool file was modified or damaged; spool the file again"}
}

// transient codes: the store is busy or had a hiccup.
var transientCodes = map[string]bool{
	"RequestTimeout": true, "SlowDown": true, "InternalError": true, "ServiceUnavailable": true,
	"BadDigest": true, "OperationAborted": true, "Throttling": true,
}

// wrap classifies an SDK error.
func wrap(op, bucket, key string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Op: op, Bucket: bucket, Key: key, Err: err}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		e.Code = ae.ErrorCode()
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		e.Status = re.HTTPStatusCode()
	}
	if e.Code == "" && e.Status == http.StatusForbidden {
		e.Code = "Forbidden" // HEAD responses carry no error body
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// Not the store's fault; the task goes back to the queue.
	case transientCodes[e.Code]:
		if e.Code == "BadDigest" {
			e.Hint = "the bytes the store received do not match their checksum; retrying"
		}
	default:
		if hint, ok := permanentHint(e.Code, bucket); ok {
			e.Permanent, e.Hint = true, hint
		} else if e.Status >= 400 && e.Status < 500 && e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests {
			e.Permanent, e.Hint = true, "the store refused the request"
		}
		e.NeedsNewFile = e.Permanent && needsNewFile(e.Code)
	}
	return e
}
