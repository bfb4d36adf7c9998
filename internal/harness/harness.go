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
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/localsvc"
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

// RedisReplica starts a redis-server replicating master (--replicaof) and
// waits until its link to the master is up (the first sync done). Stop or
// Kill it to take the replica away; Restart brings it back (it syncs
// again). It keeps no append-only file: after each sync Redis rewrites
// it, and refuses SIGTERM ("Writing initial AOF, can't exit") until done.
func RedisReplica(t testing.TB, master *localsvc.Redis) *localsvc.Redis {
	t.Helper()
	r, err := localsvc.StartRedis(localsvc.RedisOptions{Dir: t.TempDir(), ReplicaOf: master.Addr()})
	if err != nil {
		if errors.Is(err, localsvc.ErrNotInstalled) {
			t.Fatalf("integration tests need redis-server: %v", err)
		}
		t.Fatalf("start a redis-server replica: %v", err)
	}
	t.Cleanup(func() { r.Stop() })
	if err := WaitReplicaSynced(context.Background(), r, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return r
}

// WaitReplicaSynced waits until the replica r reports
// master_link_status:up.
func WaitReplicaSynced(ctx context.Context, r *localsvc.Redis, timeout time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer c.Close()
	deadline := time.Now().Add(timeout)
	for {
		info, err := c.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica %s did not sync with its master within %s: %v %s", r.Addr(), timeout, err, info)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// RedisClient connects to r and closes the client when the test ends.
func RedisClient(t testing.TB, r *localsvc.Redis) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

// S3 is a running versitygw with one bucket. It hands out plain connection
// facts (Endpoint(), AccessKey, SecretKey, Region, Bucket); tests build
// their own clients from them (internal/storage/storagetest builds dab's).
type S3 struct {
	*localsvc.S3
	Region string
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
	// versitygw ignores the region, but SigV4 signs with one.
	h := &S3{S3: s, Region: "us-east-1", Bucket: "dab-test-" + randHex(4)}
	client := s3.New(s3.Options{
		Region: h.Region, BaseEndpoint: aws.String(h.Endpoint()), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(h.AccessKey, h.SecretKey, ""),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(h.Bucket)}); err != nil {
		t.Fatalf("create bucket %s: %v", h.Bucket, err)
	}
	return h
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
