package storage

// A small object's PUT without the SDK's request pipeline. For a 4 KiB
// file the S3 client's middleware stack (endpoint rules, auth scheme and
// identity resolution, retry bookkeeping, user agent, response timing,
// deserializers), and the deep goroutine stack it needs, cost the worker
// more CPU than the request itself. directPut sends the same request the
// SDK would: the URL its endpoint rules give for the bucket, signed with
// its SigV4 signer and credentials, through its HTTP client and
// connections. Only a plain success or a 412 is taken from it; every other
// answer sends the object again through the SDK, which retries, corrects
// clock skew and reads S3's error as for any other call, so errors and
// their handling are the SDK path's. No answer at all (a connection that
// failed) is first checked with a HEAD: see Store.Put.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyauth "github.com/aws/smithy-go/auth"
	"github.com/aws/smithy-go/encoding/httpbinding"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// DirectPutMax is the largest object sent by directPut. Above it the
// request's own cost dwarfs the pipeline's, and the SDK's handling of
// large bodies (Expect: 100-continue) is worth keeping.
const DirectPutMax = 1 << 20

// requestBufferSize is the HTTP client's write buffer per connection. A
// request whose headers and body fit in it goes out in one write.
const requestBufferSize = 32 << 10

// directPutInMemoryMax is the largest object whose bytes directPut reads
// into memory before it sends them: with the headers (S3 allows 2 KiB of
// user metadata) the request fits requestBufferSize and leaves in one
// write. A body read from a file instead makes the HTTP client send the
// headers first and the body after: two writes, and a system call is dear
// next to a PUT of a few KiB.
const directPutInMemoryMax = requestBufferSize - 4<<10

// directPut sends small PUTs of one bucket.
type directPut struct {
	bucketURL *url.URL // scheme, host and path of the bucket, per the SDK's endpoint rules
	client    aws.HTTPClient
	creds     aws.CredentialsProvider
	signer    *v4.Signer
	service   string
	region    string
}

// newDirectPut prepares direct PUTs to bucket with the configuration of
// client. It returns nil, and the SDK does every PUT, where the bucket's
// endpoint is anything but plain SigV4 (S3 Express directory buckets,
// multi-region access points, ARNs) or the client has no credentials.
func newDirectPut(client *s3.Client, bucket string) *directPut {
	o := client.Options()
	if o.Credentials == nil || o.HTTPClient == nil || o.EndpointResolverV2 == nil || o.Region == "" {
		return nil
	}
	ep, err := o.EndpointResolverV2.ResolveEndpoint(context.Background(), s3.EndpointParameters{
		Bucket: aws.String(bucket), Key: aws.String("k"), Region: aws.String(o.Region),
		Endpoint:                       o.BaseEndpoint,
		ForcePathStyle:                 aws.Bool(o.UsePathStyle),
		Accelerate:                     aws.Bool(o.UseAccelerate),
		UseFIPS:                        aws.Bool(o.EndpointOptions.UseFIPSEndpoint == aws.FIPSEndpointStateEnabled),
		UseDualStack:                   aws.Bool(o.EndpointOptions.UseDualStackEndpoint == aws.DualStackEndpointStateEnabled),
		DisableMultiRegionAccessPoints: aws.Bool(o.DisableMultiRegionAccessPoints),
		UseArnRegion:                   aws.Bool(o.UseARNRegion),
		DisableS3ExpressSessionAuth:    o.DisableS3ExpressSessionAuth,
	})
	if err != nil || len(ep.Headers) > 0 {
		return nil
	}
	opts, _ := smithyauth.GetAuthOptions(&ep.Properties)
	// The endpoint rules name plain SigV4 "sigv4" (others: "sigv4a",
	// "sigv4-s3express").
	if len(opts) == 0 || (opts[0].SchemeID != "sigv4" && opts[0].SchemeID != smithyauth.SchemeIDSigV4) {
		return nil
	}
	service, _ := smithyhttp.GetSigV4SigningName(&opts[0].SignerProperties)
	region, _ := smithyhttp.GetSigV4SigningRegion(&opts[0].SignerProperties)
	if service == "" {
		service = "s3"
	}
	if region == "" {
		region = o.Region
	}
	u := ep.URI
	if u.RawPath == "" {
		u.RawPath = u.EscapedPath()
	}
	return &directPut{
		bucketURL: &u, client: o.HTTPClient, creds: o.Credentials, service: service, region: region,
		// S3 signs the path as it is sent, escaped once (the SDK's setting).
		signer: v4.NewSigner(func(so *v4.SignerOptions) { so.DisableURIPathEscaping = true }),
	}
}

// errDirectPutDeclined: the direct PUT did not succeed in a way it may
// judge; the caller sends the object through the SDK.
var errDirectPutDeclined = errors.New("direct put declined")

// put sends in's object with a conditional PUT. It returns the ETag and
// whether the store echoed the SHA-256 it checked; a 412 comes back as the
// SDK's would (isPreconditionFailed), no answer as errUnanswered (Put looks
// at the object, then sends it through the SDK); any other answer or
// failure as errDirectPutDeclined.
func (d *directPut) put(ctx context.Context, bucket string, in PutInput, meta map[string]string, checksum bool) (etag string, verified bool, err error) {
	u := *d.bucketURL
	u.Path = smithyhttp.JoinPath(u.Path, in.Key)
	u.RawPath = smithyhttp.JoinPath(u.RawPath, httpbinding.EscapePath(in.Key, false))
	body := func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(in.File, 0, in.Size)), nil }
	switch {
	case in.Size == 0:
		// A body of unknown length would go chunked; an empty one is none.
		body = func() (io.ReadCloser, error) { return http.NoBody, nil }
	case in.Size <= directPutInMemoryMax:
		b := make([]byte, in.Size)
		if _, err := in.File.ReadAt(b, 0); err != nil {
			return "", false, fmt.Errorf("%w: read %s: %v", errDirectPutDeclined, in.Key, err)
		}
		// An in-memory body is sent with the headers (net/http flushes
		// the headers apart only for other bodies).
		body = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	rc, _ := body()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), rc)
	if err != nil {
		return "", false, fmt.Errorf("%w: %v", errDirectPutDeclined, err)
	}
	req.URL = &u
	req.ContentLength, req.GetBody = in.Size, body
	h := req.Header
	if in.ContentType != "" {
		h.Set("Content-Type", in.ContentType)
	}
	h.Set("If-None-Match", "*")
	for k, v := range meta {
		h.Set("X-Amz-Meta-"+k, v)
	}
	var sum string
	if checksum {
		raw, err := hex.DecodeString(in.SHA256)
		if err != nil {
			return "", false, fmt.Errorf("storage: manifest sha256 %q of %s is not hex: %w", in.SHA256, in.Key, err)
		}
		sum = base64.StdEncoding.EncodeToString(raw)
		h.Set("X-Amz-Checksum-Sha256", sum)
	}
	// The manifest's SHA-256 is the body's: the store refuses a body that
	// differs, as it does through the SDK (withPayloadHash).
	h.Set("X-Amz-Content-Sha256", in.SHA256)
	creds, err := d.creds.Retrieve(ctx)
	if err != nil {
		return "", false, fmt.Errorf("%w: credentials: %v", errDirectPutDeclined, err)
	}
	if err := d.signer.SignHTTP(ctx, creds, req, in.SHA256, d.service, d.region, time.Now().UTC()); err != nil {
		return "", false, fmt.Errorf("%w: sign: %v", errDirectPutDeclined, err)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return "", false, &Error{Op: "put", Bucket: bucket, Key: in.Key, Err: fmt.Errorf("%w: %w", errUnanswered, err)}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection is kept
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Header.Get("ETag"), checksum && resp.Header.Get("X-Amz-Checksum-Sha256") == sum, nil
	case http.StatusPreconditionFailed:
		return "", false, &Error{Op: "put", Bucket: bucket, Key: in.Key, Code: "PreconditionFailed", Status: resp.StatusCode}
	}
	return "", false, fmt.Errorf("%w: HTTP %s", errDirectPutDeclined, strconv.Itoa(resp.StatusCode))
}
