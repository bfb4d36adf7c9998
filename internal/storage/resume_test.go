package storage_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

// countingAPI counts the parts sent, to prove a resumed upload skips parts
// the store already has.
type countingAPI struct {
	storage.S3API
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

func TestResumeReusesUploadedParts(t *testing.T) {
	t.Parallel()
	c := storagetest.Options(harness.StartS3(t))
	api := storagetest.Client(t, c)
	f, sum := storage.WriteTestFile(t, 12<<20) // three 5 MiB parts in storagetest's options
	key := "generic/resumed.bin"
	ctx := context.Background()

	// An earlier attempt created the upload and sent part 1, then died.
	out, err := api.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(c.Bucket), Key: aws.String(key), ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256,
		Metadata: map[string]string{storage.MetaSHA256: sum},
	})
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 5<<20)
	f.ReadAt(first, 0)
	h := sha256.Sum256(first)
	if _, err := api.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: aws.String(c.Bucket), Key: aws.String(key), UploadId: out.UploadId, PartNumber: aws.Int32(1),
		Body: io.NewSectionReader(f, 0, 5<<20), ContentLength: aws.Int64(5 << 20), ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(h[:])),
	}); err != nil {
		t.Fatal(err)
	}
	state := &memState{id: aws.ToString(out.UploadId)}
	counting := &countingAPI{S3API: api}
	res, err := storage.New(counting, c).Put(ctx, storage.PutInput{Key: key, File: f, Size: 12 << 20, SHA256: sum, State: state})
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
