package storage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

// copyRig is a store on one bucket of a fresh versitygw and a second bucket
// ("sources") that import sources live in.
type copyRig struct {
	api   *s3.Client
	opts  storage.Options
	store *storage.Store
}

func newCopyRig(t *testing.T) *copyRig {
	t.Helper()
	o := storagetest.Options(harness.StartS3(t))
	api := storagetest.Client(t, o)
	if _, err := api.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("sources")}); err != nil {
		t.Fatal(err)
	}
	return &copyRig{api: api, opts: o, store: storage.New(api, o)}
}

// putSource stores data under key in the sources bucket, with its SHA-256
// as the store's checksum when withSHA, with none otherwise.
func (r *copyRig) putSource(t *testing.T, key string, data []byte, withSHA bool) {
	t.Helper()
	in := &s3.PutObjectInput{Bucket: aws.String("sources"), Key: aws.String(key), Body: bytes.NewReader(data), ContentType: aws.String("image/png")}
	if withSHA {
		sum := sha256.Sum256(data)
		in.ChecksumSHA256 = aws.String(base64.StdEncoding.EncodeToString(sum[:]))
	}
	if _, err := r.api.PutObject(context.Background(), in); err != nil {
		t.Fatal(err)
	}
}

func (r *copyRig) read(t *testing.T, bucket, key string) ([]byte, map[string]string, error) {
	t.Helper()
	out, err := r.api.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, nil, err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	return b, out.Metadata, err
}

func (r *copyRig) stagingLeft(t *testing.T) []string {
	t.Helper()
	out, err := r.api.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(r.opts.Bucket), Prefix: aws.String(storage.StagingPrefix)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

func randomData(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

func copyInput(src, key, taskID string) storage.CopyInput {
	return storage.CopyInput{
		SourceBucket: "sources", SourceKey: src, Key: key, StagingKey: storage.StagingKeyFor(taskID),
		Describe: func(size int64, sum, ct string) (string, map[string]string, error) {
			return ct, map[string]string{"origin": "copy-test"}, nil
		},
	}
}

// countingCopies counts the calls that move bytes, to prove a copy sends
// none through dab and cuts large sources into parts.
type countingCopies struct {
	storage.S3API
	partCopies, puts, gets atomic.Int32
	beforePartCopy         func()
}

func (c *countingCopies) UploadPartCopy(ctx context.Context, in *s3.UploadPartCopyInput, o ...func(*s3.Options)) (*s3.UploadPartCopyOutput, error) {
	if c.partCopies.Add(1) == 1 && c.beforePartCopy != nil {
		c.beforePartCopy()
	}
	return c.S3API.UploadPartCopy(ctx, in, o...)
}

func (c *countingCopies) PutObject(ctx context.Context, in *s3.PutObjectInput, o ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	c.puts.Add(1)
	return c.S3API.PutObject(ctx, in, o...)
}

func (c *countingCopies) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	c.gets.Add(1)
	return c.S3API.GetObject(ctx, in, o...)
}

// TestCopyInServerSide: a source with a stored SHA-256 is copied in part
// copies; one without is staged first so the store hashes it, and the
// staged copy is removed. Either way the bytes are the source's, the
// object carries dab's metadata and its SHA-256, and no byte is read or
// written through dab.
func TestCopyInServerSide(t *testing.T) {
	t.Parallel()
	r := newCopyRig(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		size    int
		withSHA bool
		parts   int32
	}{
		{"checksum, three parts", 12 << 20, true, 3},
		{"checksum, one part", 70_000, true, 1},
		{"no checksum, staged", 11 << 20, false, 3},
		{"no checksum, small", 1, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, sum := randomData(t, tc.size)
			src := "in/" + strings.ReplaceAll(tc.name, " ", "+") + ".png" // '+' and ',' must be escaped in the copy source
			r.putSource(t, src, data, tc.withSHA)
			counting := &countingCopies{S3API: r.api}
			key := "generic/" + strings.NewReplacer(" ", "-", ",", "").Replace(tc.name) + ".png"
			res, err := storage.New(counting, r.opts).CopyIn(ctx, copyInput(src, key, "import-"+tc.name))
			if err != nil {
				t.Fatal(err)
			}
			if res.SHA256 != sum || res.Size != int64(tc.size) || res.Staged == tc.withSHA || res.Existed || res.ContentType != "image/png" {
				t.Fatalf("result %+v, want sha %s size %d staged %v", res, sum, tc.size, !tc.withSHA)
			}
			got, meta, err := r.read(t, r.opts.Bucket, key)
			if err != nil || !bytes.Equal(got, data) || meta[storage.MetaSHA256] != sum || meta["origin"] != "copy-test" {
				t.Fatalf("stored %d bytes, metadata %v, %v", len(got), meta, err)
			}
			if n := counting.partCopies.Load(); n != tc.parts {
				t.Errorf("%d part copies, want %d", n, tc.parts)
			}
			if counting.puts.Load() != 0 || counting.gets.Load() != 0 {
				t.Errorf("%d puts and %d gets: bytes went through dab", counting.puts.Load(), counting.gets.Load())
			}
			if left := r.stagingLeft(t); len(left) != 0 {
				t.Errorf("staged copies left: %v", left)
			}
			// Again: the object is there with the same content.
			again, err := r.store.CopyIn(ctx, copyInput(src, key, "import-again-"+tc.name))
			if err != nil || !again.Existed {
				t.Fatalf("second copy: %+v %v, want Existed", again, err)
			}
		})
	}
}

// TestCopyInRefusals: what a copy refuses, and that it leaves nothing
// behind (no object, no staged copy, no multipart upload).
func TestCopyInRefusals(t *testing.T) {
	t.Parallel()
	r := newCopyRig(t)
	ctx := context.Background()
	data, sum := randomData(t, 100_000)
	r.putSource(t, "a.png", data, false)
	r.putSource(t, "b.png", data[:50_000], true)
	other, _ := randomData(t, 10)
	if _, err := r.store.PutBytes(ctx, "generic/taken.png", other, "image/png"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		in     storage.CopyInput
		is     error
		permOK bool // a permanent storage.Error instead of a sentinel
	}{
		{"over the cap", func() storage.CopyInput {
			in := copyInput("a.png", "generic/cap.png", "t1")
			in.MaxBytes = 99_999
			return in
		}(), storage.ErrTooLarge, false},
		{"wrong sha256, staged", func() storage.CopyInput {
			in := copyInput("a.png", "generic/sha1.png", "t2")
			in.SHA256 = strings.Repeat("0", 64)
			return in
		}(), storage.ErrDigestMismatch, false},
		{"wrong sha256, from the checksum", func() storage.CopyInput {
			in := copyInput("b.png", "generic/sha2.png", "t3")
			in.SHA256 = sum
			return in
		}(), storage.ErrDigestMismatch, false},
		{"key holds other content", copyInput("a.png", "generic/taken.png", "t4"), storage.ErrConflict, false},
		{"no such source", copyInput("none.png", "generic/none.png", "t5"), nil, true},
		{"staging key outside the staging prefix", func() storage.CopyInput {
			in := copyInput("a.png", "generic/st.png", "t6")
			in.StagingKey = "generic/x"
			return in
		}(), nil, false},
	} {
		_, err := r.store.CopyIn(ctx, tc.in)
		switch {
		case err == nil:
			t.Errorf("%s: copied", tc.name)
		case tc.is != nil && !errors.Is(err, tc.is):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
		case tc.permOK && !storage.IsPermanent(err):
			t.Errorf("%s: %v, want a permanent error", tc.name, err)
		}
		if tc.is != storage.ErrConflict {
			if _, _, err := r.read(t, r.opts.Bucket, tc.in.Key); err == nil {
				t.Errorf("%s: an object was stored", tc.name)
			}
		}
	}
	if left := r.stagingLeft(t); len(left) != 0 {
		t.Errorf("staged copies left: %v", left)
	}
	ups, err := r.api.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(r.opts.Bucket)})
	if err != nil || len(ups.Uploads) != 0 {
		t.Errorf("multipart uploads left: %v %v", ups, err)
	}
}

// TestCopyInSourceChangesMidCopy: a source replaced between the look at it
// and the part copies is not stored as a mix of versions: the copy fails
// with an error a retry fixes, and the retry stores the new version whole.
func TestCopyInSourceChangesMidCopy(t *testing.T) {
	t.Parallel()
	r := newCopyRig(t)
	ctx := context.Background()
	v1, _ := randomData(t, 12<<20)
	v2, sum2 := randomData(t, 12<<20)
	r.putSource(t, "moving.png", v1, true)
	counting := &countingCopies{S3API: r.api, beforePartCopy: func() { r.putSource(t, "moving.png", v2, true) }}
	st := storage.New(counting, r.opts)
	_, err := st.CopyIn(ctx, copyInput("moving.png", "generic/moving.png", "t"))
	if err == nil || storage.IsPermanent(err) || !strings.Contains(err.Error(), "changed during the copy") {
		t.Fatalf("copy of a changing source: %v, want a retryable 'changed during the copy'", err)
	}
	res, err := st.CopyIn(ctx, copyInput("moving.png", "generic/moving.png", "t"))
	if err != nil || res.SHA256 != sum2 {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if got, _, _ := r.read(t, r.opts.Bucket, "generic/moving.png"); !bytes.Equal(got, v2) {
		t.Fatal("the stored object is not the new version")
	}
}

// noCopies is a store that has no server-side copy (501), as some
// S3-compatible stores.
type noCopies struct{ storage.S3API }

func (noCopies) UploadPartCopy(context.Context, *s3.UploadPartCopyInput, ...func(*s3.Options)) (*s3.UploadPartCopyOutput, error) {
	return nil, &smithy.GenericAPIError{Code: "NotImplemented", Message: "A header you provided implies functionality that is not implemented"}
}

func (noCopies) CopyObject(context.Context, *s3.CopyObjectInput, ...func(*s3.Options)) (*s3.CopyObjectOutput, error) {
	return nil, &smithy.GenericAPIError{Code: "NotImplemented", Message: "not implemented"}
}

// TestCopyInUnsupported: a store without copies, or an empty source,
// answers ErrCopyUnsupported (the caller streams), with nothing left behind.
func TestCopyInUnsupported(t *testing.T) {
	t.Parallel()
	r := newCopyRig(t)
	data, _ := randomData(t, 1000)
	r.putSource(t, "sha.png", data, true)
	r.putSource(t, "plain.png", data, false)
	st := storage.New(noCopies{r.api}, r.opts)
	for _, src := range []string{"sha.png", "plain.png"} {
		if _, err := st.CopyIn(context.Background(), copyInput(src, "generic/"+src, "t-"+src)); !errors.Is(err, storage.ErrCopyUnsupported) {
			t.Errorf("%s: %v, want ErrCopyUnsupported", src, err)
		}
	}
	ups, err := r.api.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(r.opts.Bucket)})
	if err != nil || len(ups.Uploads) != 0 {
		t.Errorf("multipart uploads left: %+v %v", ups.Uploads, err)
	}
	// An empty source cannot be copied in parts anywhere.
	r.putSource(t, "empty.png", nil, false)
	if _, err := r.store.CopyIn(context.Background(), copyInput("empty.png", "generic/empty.png", "t")); !errors.Is(err, storage.ErrCopyUnsupported) {
		t.Errorf("empty source: %v, want ErrCopyUnsupported", err)
	}
}

// TestStagingKeyFor: task IDs from outside never leave the staging prefix.
func TestStagingKeyFor(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"import-abc", "../../generic/x", "a/b", "import:é"} {
		k := storage.StagingKeyFor(id)
		if !strings.HasPrefix(k, storage.StagingPrefix+"imports/") || strings.Count(k, "/") != 2 {
			t.Errorf("%q -> %q", id, k)
		}
	}
}

// TestCopyInStagingKeyCannotLeaveStaging: CopyIn's own guard on the
// staging key holds for every spelling: a key that starts with the
// staging prefix but climbs out of it with dot segments (which
// file-backed stores such as versitygw resolve) is refused before
// anything is written, so the unconditional staging CopyObject cannot
// overwrite an asset and the staging delete cannot remove it. A task ID
// of "." or ".." does not make a dot segment either.
func TestCopyInStagingKeyCannotLeaveStaging(t *testing.T) {
	t.Parallel()
	r := newCopyRig(t)
	ctx := context.Background()
	data, _ := randomData(t, 1000)
	r.putSource(t, "a.png", data, false)
	victim, _ := randomData(t, 500)
	for i, sk := range []string{
		storage.StagingPrefix + "../generic/victim.png",
		storage.StagingPrefix + "imports/../../generic/victim.png",
		storage.StagingPrefix + "./../generic/victim.png",
	} {
		if _, err := r.api.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(r.opts.Bucket), Key: aws.String("generic/victim.png"), Body: bytes.NewReader(victim)}); err != nil {
			t.Fatal(err)
		}
		in := copyInput("a.png", fmt.Sprintf("generic/out%d.png", i), "x")
		in.StagingKey = sk
		if _, err := r.store.CopyIn(ctx, in); err == nil {
			t.Errorf("staging key %q: copied, want refused", sk)
		}
		got, _, err := r.read(t, r.opts.Bucket, "generic/victim.png")
		if err != nil || !bytes.Equal(got, victim) {
			t.Errorf("after staging key %q the asset generic/victim.png is %d bytes (%v), want untouched", sk, len(got), err)
		}
	}
	for _, id := range []string{".", ".."} {
		k := storage.StagingKeyFor(id)
		if last := k[strings.LastIndex(k, "/")+1:]; last == "." || last == ".." {
			t.Errorf("StagingKeyFor(%q) = %q: a dot segment", id, k)
		}
	}
}

// stageHook runs before once before the first CopyObject (the staging
// copy).
type stageHook struct {
	storage.S3API
	before func()
}

func (h *stageHook) CopyObject(ctx context.Context, in *s3.CopyObjectInput, o ...func(*s3.Options)) (*s3.CopyObjectOutput, error) {
	if h.before != nil {
		h.before()
		h.before = nil
	}
	return h.S3API.CopyObject(ctx, in, o...)
}

// TestCopyInSourceChangesBeforeStaging: a source without a SHA-256
// replaced (by a larger one) between the look at it and the staging copy
// is not staged (the copy names the ETag seen): a retryable error, no
// object, no staged copy; the retry stores the new version whole, so
// neither the size cap nor the recorded SHA-256 can be outrun.
func TestCopyInSourceChangesBeforeStaging(t *testing.T) {
	t.Parallel()
	r := newCopyRig(t)
	ctx := context.Background()
	v1, _ := randomData(t, 1000)
	v2, sum2 := randomData(t, 3000)
	r.putSource(t, "race.png", v1, false)
	st := storage.New(&stageHook{S3API: r.api, before: func() { r.putSource(t, "race.png", v2, false) }}, r.opts)
	_, err := st.CopyIn(ctx, copyInput("race.png", "generic/race.png", "race"))
	if err == nil || storage.IsPermanent(err) || !strings.Contains(err.Error(), "changed during the copy") {
		t.Fatalf("copy of a source replaced before staging: %v, want a retryable 'changed during the copy'", err)
	}
	if _, _, err := r.read(t, r.opts.Bucket, "generic/race.png"); err == nil {
		t.Fatal("an object was stored")
	}
	if left := r.stagingLeft(t); len(left) != 0 {
		t.Errorf("staged copies left: %v", left)
	}
	res, err := st.CopyIn(ctx, copyInput("race.png", "generic/race.png", "race"))
	if got, _, _ := r.read(t, r.opts.Bucket, "generic/race.png"); err != nil || res.SHA256 != sum2 || res.Size != 3000 || !bytes.Equal(got, v2) {
		t.Fatalf("retry: %+v %v", res, err)
	}
}

// TestCopyInSourceKeysStayInTheSourceBucket: no spelling of a source key
// reaches another bucket (dab's own: its journal): dot segments are
// refused by the store before anything is copied, and percent-encoded
// ones are literal keys (x-amz-copy-source is escaped once, so the store
// decodes them once), copied as the object of that name.
func TestCopyInSourceKeysStayInTheSourceBucket(t *testing.T) {
	t.Parallel()
	r := newCopyRig(t)
	ctx := context.Background()
	secret := []byte("journal entry: alice 100 credits")
	if _, err := r.store.PutBytes(ctx, "journal/a.json", secret, "application/json"); err != nil {
		t.Fatal(err)
	}
	own := r.opts.Bucket
	decoy := []byte("the partner's own object, of that literal name")
	for i, tc := range []struct {
		key   string
		exist bool // the literal key is put in the source bucket
	}{
		{"../" + own + "/journal/a.json", false},
		{"x/../../" + own + "/journal/a.json", false},
		{"/../" + own + "/journal/a.json", false},
		{"%2e%2e/" + own + "/journal/a.json", true},
		{"..%2F" + own + "%2Fjournal%2Fa.json", true},
		{"%252e%252e/" + own + "/journal/a.json", true},
		{"x/%2e%2e/%2e%2e/" + own + "/journal/a.json", true},
	} {
		for _, withSHA := range []bool{true, false} {
			if tc.exist {
				r.putSource(t, tc.key, decoy, withSHA)
			}
			dst := fmt.Sprintf("generic/k%d-%v.bin", i, withSHA)
			_, err := r.store.CopyIn(ctx, copyInput(tc.key, dst, fmt.Sprintf("k%d%v", i, withSHA)))
			got, _, rerr := r.read(t, own, dst)
			switch {
			case bytes.Equal(got, secret):
				t.Errorf("%q: copied dab's journal entry", tc.key)
			case tc.exist && (err != nil || !bytes.Equal(got, decoy)):
				t.Errorf("%q: %v, want the literal object copied", tc.key, err)
			case !tc.exist && (err == nil || rerr == nil):
				t.Errorf("%q: %v, want refused and nothing stored", tc.key, err)
			}
		}
	}
	if left := r.stagingLeft(t); len(left) != 0 {
		t.Errorf("staged copies left: %v", left)
	}
}

// raceTarget puts other content under the copy's key just before the
// multipart upload starts (another import or upload winning the race).
type raceTarget struct {
	storage.S3API
	before func()
}

func (h *raceTarget) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, o ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	if h.before != nil {
		h.before()
		h.before = nil
	}
	return h.S3API.CreateMultipartUpload(ctx, in, o...)
}

// TestCopyInNeverOverwritesARaceWinner: an object written under the key
// after CopyIn looked (and found none) is not overwritten: the completion
// is conditional (If-None-Match: *), and its 412 is resolved as for an
// upload: the same content is Existed, other content ErrConflict (a
// permanent storage error, with the hint). The winner's bytes stay, and
// no multipart upload or staged copy is left.
func TestCopyInNeverOverwritesARaceWinner(t *testing.T) {
	t.Parallel()
	r := newCopyRig(t)
	ctx := context.Background()
	for _, tc := range []struct {
		withSHA, same bool
	}{{true, false}, {false, false}, {true, true}, {false, true}} {
		name := fmt.Sprintf("sha=%v same=%v", tc.withSHA, tc.same)
		data, _ := randomData(t, 70_000)
		winner, _ := randomData(t, 1234)
		src, key := fmt.Sprintf("race-%v-%v.png", tc.withSHA, tc.same), fmt.Sprintf("generic/race-%v-%v.png", tc.withSHA, tc.same)
		r.putSource(t, src, data, tc.withSHA)
		st := storage.New(&raceTarget{S3API: r.api, before: func() {
			if tc.same {
				sum := sha256.Sum256(data)
				_, err := r.api.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(r.opts.Bucket), Key: aws.String(key), Body: bytes.NewReader(data),
					Metadata: map[string]string{storage.MetaSHA256: hex.EncodeToString(sum[:])}})
				if err != nil {
					t.Error(err)
				}
				winner = data
			} else if _, err := r.store.PutBytes(ctx, key, winner, "image/png"); err != nil {
				t.Error(err)
			}
		}}, r.opts)
		res, err := st.CopyIn(ctx, copyInput(src, key, "race-"+src))
		switch {
		case tc.same && (err != nil || !res.Existed):
			t.Errorf("%s: %+v %v, want Existed", name, res, err)
		case !tc.same && (!errors.Is(err, storage.ErrConflict) || !storage.IsPermanent(err)):
			t.Errorf("%s: %v, want a permanent ErrConflict", name, err)
		}
		if got, _, _ := r.read(t, r.opts.Bucket, key); !bytes.Equal(got, winner) {
			t.Errorf("%s: the race winner was overwritten", name)
		}
	}
	ups, err := r.api.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(r.opts.Bucket)})
	if err != nil || len(ups.Uploads) != 0 {
		t.Errorf("multipart uploads left: %v %v", ups, err)
	}
	if left := r.stagingLeft(t); len(left) != 0 {
		t.Errorf("staged copies left: %v", left)
	}
}
