package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// PutBytes stores a small body under key unless the key exists
// (If-None-Match: *), for the ledger's journal. When the key exists with
// the same bytes it returns existed=true (a re-run after a crash); with
// other bytes it returns ErrConflict: dab never overwrites.
func (s *Store) PutBytes(ctx context.Context, key string, body []byte, contentType string) (existed bool, err error) {
	sum := sha256.Sum256(body)
	input := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(key),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		ContentType:   aws.String(contentType),
		Metadata:      map[string]string{MetaSHA256: hex.EncodeToString(sum[:])},
		IfNoneMatch:   aws.String("*"),
	}
	if s.opts.ChecksumMode == ChecksumSHA256 {
		input.ChecksumSHA256 = aws.String(base64.StdEncoding.EncodeToString(sum[:]))
	}
	_, err = s.api.PutObject(ctx, input, withPayloadHash(hex.EncodeToString(sum[:])))
	if err == nil {
		return false, nil
	}
	err = wrap("put", s.bucket, key, err)
	if !isPreconditionFailed(err) {
		return false, err
	}
	have, gerr := s.GetBytes(ctx, key)
	if gerr != nil {
		return false, gerr
	}
	if bytes.Equal(have, body) {
		return true, nil
	}
	return false, &Error{Op: "put", Bucket: s.bucket, Key: key, Code: "Conflict", Status: http.StatusConflict, Permanent: true,
		Hint: fmt.Sprintf("s3://%s/%s already holds other content (%d bytes, this one %d): dab never overwrites", s.bucket, key, len(have), len(body)),
		Err:  ErrConflict}
}

// GetBytes reads a whole (small) object; a missing one is ErrNotFound.
func (s *Store) GetBytes(ctx context.Context, key string) ([]byte, error) {
	out, err := s.api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if isNotFound(err) {
		return nil, fmt.Errorf("storage: s3://%s/%s: %w", s.bucket, key, ErrNotFound)
	}
	if err != nil {
		return nil, wrap("get", s.bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, wrap("get", s.bucket, key, err)
	}
	return b, nil
}

// ListKeys calls fn with every key under prefix, in key order.
func (s *Store) ListKeys(ctx context.Context, prefix string, fn func(key string) error) error {
	return s.List(ctx, prefix, func(o ObjectInfo) error { return fn(o.Key) })
}
