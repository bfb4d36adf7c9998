package storage

import (
	"net/http"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// TestWrapClassifies: storage, not its callers, decides which failures
// retrying can fix and which need another file.
func TestWrapClassifies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code                    string
		status                  int
		permanent, needsNewFile bool
	}{
		{"SlowDown", http.StatusServiceUnavailable, false, false},
		{"SignatureDoesNotMatch", http.StatusForbidden, true, false},
		{"NoSuchBucket", http.StatusNotFound, true, false},
		{"EntityTooLarge", http.StatusBadRequest, true, true},
		{"KeyTooLongError", http.StatusBadRequest, true, true},
		{"ObjectParentIsFile", http.StatusConflict, true, true},
		{"ExistingObjectIsDirectory", http.StatusConflict, true, true},
		{"ObjectParentIsFile", http.StatusInternalServerError, false, false}, // not permanent: retried, never moved
	}
	for _, tt := range tests {
		sdkErr := &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: tt.status}},
			Err:      &smithy.GenericAPIError{Code: tt.code},
		}}
		e := wrap("put", "b", "k", sdkErr).(*Error)
		if e.Code != tt.code || e.Permanent != tt.permanent || e.NeedsNewFile != tt.needsNewFile {
			t.Errorf("%s %d: code %q permanent %v needs new file %v; want permanent %v needs new file %v",
				tt.code, tt.status, e.Code, e.Permanent, e.NeedsNewFile, tt.permanent, tt.needsNewFile)
		}
	}
}
