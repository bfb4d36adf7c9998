// Package storagetest builds dab's S3 clients and stores on the test
// harness's versitygw, for the tests of every package that uploads or
// presigns (the harness itself knows only connection facts).
package storagetest

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/storage"
)

// Options are dab's S3 options for srv's bucket, with small multipart sizes
// (from 6 MiB, in 5 MiB parts, 2 at once; copies in 5 MiB parts too) so
// tests exercise multipart uploads and copies with little data.
func Options(srv *harness.S3) storage.Options {
	return storage.Options{
		Bucket: srv.Bucket, Region: srv.Region, Endpoint: srv.Endpoint(), PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey,
		ChecksumMode:       storage.ChecksumSHA256,
		MultipartThreshold: 6 << 20, PartSize: storage.PartSizeMin, PartConcurrency: 2,
		CopyPartSize: storage.PartSizeMin,
	}
}

// Client builds an S3 client for o.
func Client(t testing.TB, o storage.Options) *s3.Client {
	t.Helper()
	client, err := storage.NewClient(context.Background(), o)
	if err != nil {
		t.Fatalf("s3 client: %v", err)
	}
	return client
}

// Store returns a storage.Store on srv's bucket with Options(srv).
func Store(t testing.TB, srv *harness.S3) *storage.Store {
	t.Helper()
	o := Options(srv)
	return storage.New(Client(t, o), o)
}
