// Package harness starts the real servers integration tests run against: a
// redis-server and a versitygw S3 gateway, each on a free loopback port with
// its data in the test's temporary folder, stopped when the test ends. Tests
// can stop, kill and restart them. A missing binary fails the test with the
// command that installs it.
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/internal/storage"
)

// Redis starts a redis-server for the test.
func Redis(t testing.TB) *localsvc.Redis {
	t.Helper()
	r, err := localsvc.StartRedis(localsvc.RedisOptions{Dir: t.TempDir(), AOF: true})
	if err != nil {
		if errors.Is(err, localsvc.ErrNotInstalled) {
			t.Fatalf("integration tests need redis-server: %v", err)
		}
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() { r.Stop() })
	return r
}

// RedisClient connects to r and closes the client when the test ends.
func RedisClient(t testing.TB, r *localsvc.Redis) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

// S3 is a running versitygw with one bucket.
type S3 struct {
	*localsvc.S3
	Bucket string
}

// StartS3 starts versitygw for the test and creates a bucket.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	s, err := localsvc.StartS3(localsvc.S3Options{Dir: t.TempDir(), AccessKey: "dabtest" + randHex(4), SecretKey: randHex(16)})
	if err != nil {
		if errors.Is(err, localsvc.ErrNotInstalled) {
			t.Fatalf("integration tests need versitygw: %v", err)
		}
		t.Fatalf("start versitygw: %v", err)
	}
	t.Cleanup(func() { s.Stop() })
	h := &S3{S3: s, Bucket: "dab-test-" + randHex(4)}
	client := h.Client(t, h.Config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(h.Bucket)}); err != nil {
		t.Fatalf("create bucket %s: %v", h.Bucket, err)
	}
	return h
}

// Config returns dab's S3 settings for this server, with small multipart
// sizes so tests exercise multipart uploads with little data.
func (h *S3) Config() config.S3 {
	return config.S3{
		Bucket: h.Bucket, Region: "us-east-1", Endpoint: h.Endpoint(), PathStyle: true,
		AccessKeyID: h.AccessKey, SecretAccessKey: h.SecretKey,
		ChecksumMode:       config.ChecksumSHA256,
		MultipartThreshold: 6 << 20, PartSize: 5 << 20, PartConcurrency: 2,
	}
}

// Client builds an S3 client for c.
func (h *S3) Client(t testing.TB, c config.S3) *s3.Client {
	t.Helper()
	client, err := storage.NewClient(context.Background(), c)
	if err != nil {
		t.Fatalf("s3 client: %v", err)
	}
	return client
}

// Store returns a storage.Store on this server's bucket.
func (h *S3) Store(t testing.TB) *storage.Store {
	t.Helper()
	c := h.Config()
	return storage.New(h.Client(t, c), c)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
