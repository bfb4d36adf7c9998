package storage

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"
)

// Why dab has its own multipart uploader rather than the SDK's transfer
// manager: the transfer manager copies every part into buffers it allocates
// per upload ((concurrency+1) x part size, plus the first part read whole), so
// a worker running several large uploads at once needs hundreds of MiB. Here
// each part is an io.SectionReader over the spool file: nothing is buffered,
// memory does not grow with part size, file size or the number of uploads,
// and the parts already in the store are reused when a task is retried.

// maxParts is S3's limit on the parts of one upload.
const maxParts = 10000

// UploadState remembers the multipart upload of one spool entry across task
// attempts and worker crashes, so a retry resumes it instead of starting
// over. The spool implements it; nil disables resuming.
type UploadState interface {
	// LoadUploadID returns the saved upload ID, or "" when there is none.
	LoadUploadID() (string, error)
	SaveUploadID(id string) error
	ClearUploadID() error
}

type part struct {
	number int32
	offset int64
	size   int64
}

// planParts splits size bytes into parts of partSize, growing the part size
// when the file would need more than maxParts parts.
func planParts(size, partSize int64) []part {
	if size > partSize*maxParts {
		partSize = (size + maxParts - 1) / maxParts
	}
	var parts []part
	for off, n := int64(0), int32(1); off < size; off, n = off+partSize, n+1 {
		parts = append(parts, part{number: n, offset: off, size: min(partSize, size-off)})
	}
	return parts
}

func (s *Store) putMultipart(ctx context.Context, in PutInput, meta map[string]string) error {
	useSHA := s.opts.ChecksumMode == ChecksumSHA256
	uploadID, done := s.resumable(ctx, in, useSHA)
	if uploadID == "" {
		input := &s3.CreateMultipartUploadInput{
			Bucket: aws.String(s.bucket), Key: aws.String(in.Key),
			ContentType: aws.String(in.ContentType), Metadata: meta,
		}
		if useSHA {
			input.ChecksumAlgorithm = s3types.ChecksumAlgorithmSha256
		}
		out, err := s.api.CreateMultipartUpload(ctx, input)
		if err != nil {
			return wrap("put", s.bucket, in.Key, err)
		}
		uploadID = aws.ToString(out.UploadId)
		if in.State != nil {
			if err := in.State.SaveUploadID(uploadID); err != nil {
				s.abort(in, uploadID)
				return fmt.Errorf("storage: remember upload of %s: %w", in.Key, err)
			}
		}
	}

	completed, whole, err := s.uploadParts(ctx, in, uploadID, done, useSHA)
	if err != nil {
		if IsPermanent(err) {
			s.abort(in, uploadID)
		}
		return err
	}
	if whole != in.SHA256 {
		s.abort(in, uploadID)
		return changed(s.bucket, in.Key, fmt.Sprintf("the spool file's sha256 is now %s, the manifest says %s", whole, in.SHA256))
	}
	_, err = s.api.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(in.Key), UploadId: aws.String(uploadID),
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: completed},
		IfNoneMatch:     aws.String("*"),
	})
	if err != nil {
		err = wrap("put", s.bucket, in.Key, err)
		// On a conflict or a permanent error the upload is of no further use.
		if isPreconditionFailed(err) || IsPermanent(err) {
			s.abort(in, uploadID)
		}
		return err
	}
	if in.State != nil {
		in.State.ClearUploadID()
	}
	return nil
}

// resumable returns the saved upload of this entry and the parts it already
// holds whose SHA-256 matches the spool file, or "" to start a new upload.
func (s *Store) resumable(ctx context.Context, in PutInput, useSHA bool) (string, map[int32]s3types.CompletedPart) {
	if in.State == nil {
		return "", nil
	}
	id, err := in.State.LoadUploadID()
	if err != nil || id == "" {
		return "", nil
	}
	if !useSHA {
		// Without part checksums dab cannot tell a good part from a stale one.
		s.abort(in, id)
		return "", nil
	}
	done := map[int32]s3types.CompletedPart{}
	p := s3.NewListPartsPaginator(s.api, &s3.ListPartsInput{Bucket: aws.String(s.bucket), Key: aws.String(in.Key), UploadId: aws.String(id)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			// NoSuchUpload (aborted, expired, or completed) or no permission to
			// list parts: start over.
			in.State.ClearUploadID()
			return "", nil
		}
		for _, pt := range page.Parts {
			done[aws.ToInt32(pt.PartNumber)] = s3types.CompletedPart{
				PartNumber: pt.PartNumber, ETag: pt.ETag, ChecksumSHA256: pt.ChecksumSHA256,
			}
		}
	}
	return id, done
}

// hashedPart is a part with the SHA-256 of its bytes.
type hashedPart struct {
	part
	sum []byte
}

// uploadParts sends the parts not already done, PartConcurrency at a time,
// and returns them with the hex SHA-256 of the whole file (a SpoolChanged
// error when the file is longer than in.Size). One reader goes
// through the file in order, hashing each part and the whole file in the
// same pass; the senders then read each part once more as the request body
// (from the page cache), with the part's hash given to the signer so the SDK
// does not hash it a third time.
func (s *Store) uploadParts(ctx context.Context, in PutInput, uploadID string, done map[int32]s3types.CompletedPart, useSHA bool) ([]s3types.CompletedPart, string, error) {
	whole := sha256.New()
	buf := make([]byte, 256<<10)
	feed := func(send func(hashedPart) bool) error {
		for _, p := range planParts(in.Size, s.opts.PartSize) {
			ph := sha256.New()
			if _, err := io.CopyBuffer(io.MultiWriter(whole, ph), io.NewSectionReader(in.File, p.offset, p.size), buf); err != nil {
				return fmt.Errorf("storage: read part %d of %s: %w", p.number, in.Key, err)
			}
			if !send(hashedPart{part: p, sum: ph.Sum(nil)}) {
				return nil
			}
		}
		return nil
	}
	result, err := sendParts(ctx, s.opts.PartConcurrency, feed, func(ctx context.Context, hp hashedPart) (s3types.CompletedPart, error) {
		return s.uploadPart(ctx, in, uploadID, hp, done[hp.number], useSHA)
	})
	if isBareContextErr(err) {
		return nil, "", wrap("put", s.bucket, in.Key, err)
	}
	if err != nil {
		return nil, "", err
	}
	// A file that grew past the manifest's size does not match it either.
	var probe [1]byte
	if n, _ := in.File.ReadAt(probe[:], in.Size); n > 0 {
		return nil, "", changed(s.bucket, in.Key, fmt.Sprintf("the spool file is longer than the manifest's %d bytes", in.Size))
	}
	return result, hex.EncodeToString(whole.Sum(nil)), nil
}

// sendParts runs send on each part feed hands over, concurrency at a time,
// and returns the completed parts in order. The first error (of feed or of
// a send) cancels the rest and is returned as it is; feed's send answers
// false once that happened. When ctx ends first, the error is ctx.Err()
// itself (see isBareContextErr).
func sendParts[P any](ctx context.Context, concurrency int, feed func(send func(P) bool) error,
	send func(context.Context, P) (s3types.CompletedPart, error)) ([]s3types.CompletedPart, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		result   []s3types.CompletedPart
		work     = make(chan P)
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		mu.Unlock()
	}
	for range max(concurrency, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				cp, err := send(ctx, p)
				if err != nil {
					fail(err)
					continue
				}
				mu.Lock()
				result = append(result, cp)
				mu.Unlock()
			}
		}()
	}
	if err := feed(func(p P) bool {
		select {
		case work <- p:
			return true
		case <-ctx.Done():
			return false
		}
	}); err != nil {
		fail(err)
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sort.Slice(result, func(i, j int) bool { return aws.ToInt32(result[i].PartNumber) < aws.ToInt32(result[j].PartNumber) })
	return result, nil
}

func (s *Store) uploadPart(ctx context.Context, in PutInput, uploadID string, hp hashedPart, prev s3types.CompletedPart, useSHA bool) (s3types.CompletedPart, error) {
	input := &s3.UploadPartInput{
		Bucket: aws.String(s.bucket), Key: aws.String(in.Key), UploadId: aws.String(uploadID),
		PartNumber: aws.Int32(hp.number), Body: io.NewSectionReader(in.File, hp.offset, hp.size), ContentLength: aws.Int64(hp.size),
	}
	if useSHA {
		sum := base64.StdEncoding.EncodeToString(hp.sum)
		if prev.PartNumber != nil && aws.ToString(prev.ChecksumSHA256) == sum {
			return prev, nil // in the store from an earlier attempt, same bytes
		}
		input.ChecksumSHA256 = aws.String(sum)
	}
	out, err := s.api.UploadPart(ctx, input, withPayloadHash(hex.EncodeToString(hp.sum)))
	if err != nil {
		return s3types.CompletedPart{}, wrap("put", s.bucket, in.Key, err)
	}
	if in.Progress != nil {
		in.Progress(hp.size)
	}
	return s3types.CompletedPart{PartNumber: aws.Int32(hp.number), ETag: out.ETag, ChecksumSHA256: out.ChecksumSHA256}, nil
}

// abort ends an upload and forgets it; it runs even when the task's context
// is gone, so a shutdown does not leave parts behind.
func (s *Store) abort(in PutInput, uploadID string) {
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	_, err := s.api.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(in.Key), UploadId: aws.String(uploadID),
	})
	var nsu *s3types.NoSuchUpload
	if err == nil || errors.As(err, &nsu) {
		if in.State != nil {
			in.State.ClearUploadID()
		}
	}
	// Otherwise the ID stays saved and the next attempt aborts or resumes it;
	// the bucket's lifecycle rule removes what is left after that.
}

// withPayloadHash gives the SigV4 signer a body hash dab has already
// computed, so the SDK does not read and hash the body again (it does so for
// plain-HTTP endpoints; over HTTPS it would otherwise send UNSIGNED-PAYLOAD).
// A body that no longer matches the hash is refused by the store.
func withPayloadHash(hexSum string) func(*s3.Options) {
	return func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
			return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("DabPayloadHash",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, hexSum), in)
				}), "ComputePayloadHash", middleware.Before)
		})
	}
}

// isBareContextErr tells sendParts' own context error (which the caller
// wraps with what it was doing) from a part's error (already wrapped).
func isBareContextErr(err error) bool {
	return err == context.Canceled || err == context.DeadlineExceeded //nolint:errorlint // identity is the point
}
