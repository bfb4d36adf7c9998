package storage_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

func readBack(t *testing.T, st *storage.Store, key string) []byte {
	t.Helper()
	rc, _, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPut(t *testing.T) {
	t.Parallel()
	srv := harness.StartS3(t)
	tests := []struct {
		name      string
		size      int
		multipart bool
		checksum  string
	}{
		{"empty", 0, false, storage.ChecksumSHA256},
		{"small", 4096, false, storage.ChecksumSHA256},
		{"small checksum off", 4096, false, storage.ChecksumOff},
		{"multipart", 11<<20 + 123, true, storage.ChecksumSHA256},
		{"multipart checksum off", 6 << 20, true, storage.ChecksumOff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := storagetest.Options(srv)
			c.ChecksumMode = tt.checksum
			st := storage.New(storagetest.Client(t, c), c)
			f, sum := storage.WriteTestFile(t, tt.size)
			key := "generic/" + strings.ReplaceAll(tt.name, " ", "-") + ".bin"
			in := storage.PutInput{Key: key, File: f, Size: int64(tt.size), SHA256: sum, ContentType: "application/octet-stream"}
			res, err := st.Put(context.Background(), in)
			if err != nil {
				t.Fatalf("put: %v", err)
			}
			if res.Existed || res.Multipart != tt.multipart || res.ETag == "" {
				t.Fatalf("result = %+v", res)
			}
			got := readBack(t, st, key)
			gs := sha256.Sum256(got)
			if len(got) != tt.size || hex.EncodeToString(gs[:]) != sum {
				t.Fatalf("read back %d bytes sha %x, want %d bytes sha %s", len(got), gs, tt.size, sum)
			}
			// A second put of the same content is an idempotent success.
			res2, err := st.Put(context.Background(), in)
			if err != nil || !res2.Existed {
				t.Fatalf("second put = %+v, %v; want Existed", res2, err)
			}
		})
	}
}

func TestPutConflictNeverOverwrites(t *testing.T) {
	t.Parallel()
	srv := harness.StartS3(t)
	st := storagetest.Store(t, srv)
	ctx := context.Background()
	for _, size := range []int{100, 7 << 20} {
		key := "cyoa/NODE_a-" + hex.EncodeToString([]byte{byte(size)}) + ".png"
		f1, sum1 := storage.WriteTestFile(t, size)
		f2, sum2 := storage.WriteTestFile(t, size)
		if _, err := st.Put(ctx, storage.PutInput{Key: key, File: f1, Size: int64(size), SHA256: sum1}); err != nil {
			t.Fatal(err)
		}
		_, err := st.Put(ctx, storage.PutInput{Key: key, File: f2, Size: int64(size), SHA256: sum2})
		var se *storage.Error
		if !errors.Is(err, storage.ErrConflict) || !storage.IsPermanent(err) || !errors.As(err, &se) || !se.NeedsNewFile {
			t.Fatalf("size %d: conflicting put error = %v, want permanent ErrConflict that needs a new file", size, err)
		}
		if !strings.Contains(err.Error(), "never overwrites") || !strings.Contains(err.Error(), sum1) {
			t.Fatalf("conflict message %q does not explain", err)
		}
		got := readBack(t, st, key)
		if s := sha256.Sum256(got); hex.EncodeToString(s[:]) != sum1 {
			t.Fatalf("size %d: object was overwritten", size)
		}
	}
}

func TestPermanentErrors(t *testing.T) {
	t.Parallel()
	srv := harness.StartS3(t)
	tests := []struct {
		name   string
		mutate func(*storage.Options)
		code   string
		hint   string
	}{
		{"wrong secret", func(c *storage.Options) { c.SecretAccessKey = "wrong-secret" }, "SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"},
		// AWS says InvalidAccessKeyId; versitygw says XAdminUserNotFound. Both get the same hint.
		{"unknown access key", func(c *storage.Options) { c.AccessKeyID = "nobody" }, "XAdminUserNotFound", "check AWS_ACCESS_KEY_ID"},
		{"missing bucket", func(c *storage.Options) { c.Bucket = "no-such-bucket-here" }, "NoSuchBucket", `"no-such-bucket-here" does not exist`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := storagetest.Options(srv)
			tt.mutate(&c)
			st := storage.New(storagetest.Client(t, c), c)
			f, sum := storage.WriteTestFile(t, 10)
			for _, op := range []string{"check", "put", "put multipart"} {
				var err error
				switch op {
				case "check":
					err = st.Check(context.Background())
				case "put":
					_, err = st.Put(context.Background(), storage.PutInput{Key: "generic/x", File: f, Size: 10, SHA256: sum})
				case "put multipart":
					big, bigSum := storage.WriteTestFile(t, 7<<20)
					_, err = st.Put(context.Background(), storage.PutInput{Key: "generic/big", File: big, Size: 7 << 20, SHA256: bigSum})
				}
				var se *storage.Error
				if !errors.As(err, &se) || !se.Permanent || se.Code != tt.code || !strings.Contains(err.Error(), tt.hint) {
					t.Fatalf("%s: err = %v, want permanent %s mentioning %q", op, err, tt.code, tt.hint)
				}
			}
		})
	}
}

func TestPutDetectsChangedSpoolFile(t *testing.T) {
	t.Parallel()
	srv := harness.StartS3(t)
	st := storagetest.Store(t, srv)
	f, _ := storage.WriteTestFile(t, 7<<20)
	_, otherSum := storage.WriteTestFile(t, 7<<20)
	// The manifest says otherSum: the file "changed" since it was spooled.
	_, err := st.Put(context.Background(), storage.PutInput{Key: "generic/changed", File: f, Size: 7 << 20, SHA256: otherSum})
	var se *storage.Error
	if !errors.Is(err, storage.ErrChanged) || !storage.IsPermanent(err) || !errors.As(err, &se) || !se.NeedsNewFile {
		t.Fatalf("err = %v, want permanent ErrChanged that needs a new file", err)
	}
	if _, _, err := st.Get(context.Background(), "generic/changed"); err == nil {
		t.Fatal("the object with the wrong bytes was left in the bucket")
	}
	// Small files: the store itself refuses bytes that do not match the checksum.
	small, _ := storage.WriteTestFile(t, 100)
	_, err = st.Put(context.Background(), storage.PutInput{Key: "generic/changed-small", File: small, Size: 100, SHA256: otherSum})
	if err == nil {
		t.Fatal("put with a wrong checksum succeeded")
	}
	if _, _, err := st.Get(context.Background(), "generic/changed-small"); err == nil {
		t.Fatal("the store kept an object whose checksum did not match")
	}
}

// TestPutDetectsGrownSpoolFile: a multipart upload of a file that grew past
// its manifest's size fails like a changed file, and leaves no object.
func TestPutDetectsGrownSpoolFile(t *testing.T) {
	t.Parallel()
	st := storagetest.Store(t, harness.StartS3(t))
	f, _ := storage.WriteTestFile(t, 7<<20)
	size := int64(7<<20 - 1) // the manifest knew one byte less
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		t.Fatal(err)
	}
	_, err := st.Put(context.Background(), storage.PutInput{Key: "generic/grown", File: f, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))})
	var se *storage.Error
	if !errors.Is(err, storage.ErrChanged) || !errors.As(err, &se) || !se.Permanent || !se.NeedsNewFile || !strings.Contains(err.Error(), "longer than the manifest") {
		t.Fatalf("err = %v, want a permanent SpoolChanged error saying the file is longer", err)
	}
	if _, _, err := st.Get(context.Background(), "generic/grown"); err == nil {
		t.Fatal("the object of a grown file was left in the bucket")
	}
}
