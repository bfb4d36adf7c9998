package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// ErrNotFound: there is no object under the key.
var ErrNotFound = errors.New("object not found")

// ObjectInfo is what a listing says about an object.
type ObjectInfo struct {
	Key          string
	Size         int64
	LastModified time.Time
}

// Object is what a HEAD says about an object: its size, content type and
// user metadata (see ParseMetadata).
type Object struct {
	Key         string
	Size        int64
	ContentType string
	Metadata    map[string]string
}

// listPageSize is the page size of List (S3's maximum); tests make it
// smaller (Store.listPage) to see more pages.
const listPageSize = 1000

// List calls fn for every object whose key starts with prefix, in key
// order, one ListObjectsV2 page at a time; an error from fn stops it and
// is returned.
func (s *Store) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	page := int32(listPageSize)
	if s.listPage > 0 {
		page = s.listPage
	}
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), MaxKeys: aws.Int32(page)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	for {
		out, err := s.api.ListObjectsV2(ctx, in)
		if err != nil {
			return wrap("list", s.bucket, prefix, err)
		}
		for _, o := range out.Contents {
			if err := fn(ObjectInfo{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), LastModified: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
		if !aws.ToBool(out.IsTruncated) || aws.ToString(out.NextContinuationToken) == "" {
			return nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}

// Head reads an object's size, content type and user metadata; a missing
// object is ErrNotFound.
func (s *Store) Head(ctx context.Context, key string) (Object, error) {
	out, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if isNotFound(err) {
		return Object{}, fmt.Errorf("storage: s3://%s/%s: %w", s.bucket, key, ErrNotFound)
	}
	if err != nil {
		return Object{}, wrap("head", s.bucket, key, err)
	}
	return Object{Key: key, Size: aws.ToInt64(out.ContentLength), ContentType: aws.ToString(out.ContentType), Metadata: out.Metadata}, nil
}

// RecordMeta reads what o says about its asset record (ParseMetadata).
func (o Object) RecordMeta() (ObjectMeta, error) {
	return ParseMetadata(o.Key, o.ContentType, o.Size, o.Metadata)
}
