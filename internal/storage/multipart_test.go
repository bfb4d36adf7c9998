package storage

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

func TestPlanParts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		size, partSize int64
		wantParts      int
		wantLast       int64
	}{
		{10 << 20, 5 << 20, 2, 5 << 20},
		{11 << 20, 5 << 20, 3, 1 << 20},
		{5 << 20, 5 << 20, 1, 5 << 20},
		{5 << 40, 5 << 20, maxParts, 0}, // 5 TiB: part size grows to stay within 10,000 parts
	}
	for _, tt := range tests {
		parts := planParts(tt.size, tt.partSize)
		if len(parts) > maxParts || (tt.wantParts != 0 && len(parts) != tt.wantParts) {
			t.Fatalf("planParts(%d, %d) = %d parts, want %d", tt.size, tt.partSize, len(parts), tt.wantParts)
		}
		var total int64
		for i, p := range parts {
			if p.number != int32(i+1) || p.offset != total {
				t.Fatalf("part %d = %+v", i, p)
			}
			total += p.size
		}
		if total != tt.size || (tt.wantLast != 0 && parts[len(parts)-1].size != tt.wantLast) {
			t.Fatalf("planParts(%d, %d): total %d, last %d", tt.size, tt.partSize, total, parts[len(parts)-1].size)
		}
	}
}

// countingAPI counts the parts sent, to prove a resumed upload skips parts
// the store already has.
type countingAPI struct {
	S3API
	parts atomic.Int32
}

func (c *countingAPI) UploadPart(ctx context.Context, in *s3.UploadPartInput, o ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	c.parts.Add(1)
	return c.S3API.UploadPart(ctx, in, o...)
}

type memState struct{ id string }

func (m *memState) LoadUploadID() (string, error) { return m.id, nil }
func (m *memState) SaveUploadID(id string) error  { m.id = id; return nil }
func (m *memState) ClearUploadID() error          { m.id = ""; return nil }

// newTestStore is set by the external test package's init (it needs the
// harness, which imports this package).
var newTestStore func(t *testing.T) (S3API, func(S3API) *Store)

func TestResumeReusesUploadedParts(t *testing.T) {
	t.Parallel()
	if newTestStore == nil {
		t.Fatal("harness hook not installed")
	}
	api, mk := newTestStore(t)
	f, sum := WriteTestFile(t, 12<<20) // three 5 MiB parts in the harness config
	key := "generic/resumed.bin"
	ctx := context.Background()

	// An earlier attempt created the upload and sent part 1, then died.
	out, err := api.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(mk(api).bucket), Key: aws.String(key), ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256,
		Metadata: map[string]string{MetaSHA256: sum},
	})
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 5<<20)
	f.ReadAt(first, 0)
	h := sha256.Sum256(first)
	if _, err := api.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: aws.String(mk(api).bucket), Key: aws.String(key), UploadId: out.UploadId, PartNumber: aws.Int32(1),
		Body: sectionOf(f, 0, 5<<20), ContentLength: aws.Int64(5 << 20), ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(h[:])),
	}); err != nil {
		t.Fatal(err)
	}
	state := &memState{id: aws.ToString(out.UploadId)}
	counting := &countingAPI{S3API: api}
	res, err := mk(counting).Put(ctx, PutInput{Key: key, File: f, Size: 12 << 20, SHA256: sum, State: state})
	if err != nil {
		t.Fatal(err)
	}
	if got := counting.parts.Load(); got != 2 {
		t.Fatalf("sent %d parts, want 2 (part 1 was in the store already)", got)
	}
	if !res.Multipart || state.id != "" {
		t.Fatalf("result %+v, state %q", res, state.id)
	}
}
