package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// PresignAPI is the presigning dab does; *s3.PresignClient (from
// s3.NewPresignClient of the store's client, so with its endpoint, path
// style, region and credentials) implements it. Presigning sends nothing:
// the URL carries a signature made with dab's credentials, and whoever holds
// it may GET that one object, as dab, until it expires. The IAM action that
// must allow it is therefore s3:GetObject (the policy test in cmd/dab keeps
// deploy/ and this interface in step).
type PresignAPI interface {
	PresignGetObject(context.Context, *s3.GetObjectInput, ...func(*s3.PresignOptions)) (*v4.PresignedHTTPRequest, error)
}

// Presigner makes presigned GET URLs for objects of one bucket.
type Presigner struct {
	api    PresignAPI
	bucket string
	origin string
}

// originProbeKey is the key presigned once to learn where URLs point.
const originProbeKey = "dab-origin-probe"

// NewPresigner returns a Presigner for bucket. It works out the origin of
// its URLs by presigning a probe with throw-away credentials: no network,
// no real credentials needed at start (an instance role is asked only
// when a real URL is made).
func NewPresigner(api PresignAPI, bucket string) (*Presigner, error) {
	probe := credentials.NewStaticCredentialsProvider("origin-probe", "origin-probe", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := api.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(originProbeKey)},
		s3.WithPresignClientFromClientOptions(func(o *s3.Options) { o.Credentials = probe }))
	if err != nil {
		return nil, fmt.Errorf("storage: presign for bucket %q: %w", bucket, err)
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("storage: presigned URLs of bucket %q would go to %q, which is no URL: check AWS_ENDPOINT_URL_S3", bucket, req.URL)
	}
	return &Presigner{api: api, bucket: bucket, origin: u.Scheme + "://" + u.Host}, nil
}

// Bucket is the presigner's bucket.
func (p *Presigner) Bucket() string { return p.bucket }

// Origin is scheme://host[:port] of the URLs the presigner makes for its
// bucket: what a Content-Security-Policy must allow for the browser to
// load them (img-src for previews).
func (p *Presigner) Origin() string { return p.origin }

// URLOptions shape one presigned GET.
type URLOptions struct {
	// TTL is how long the URL works, URLTTLMin to URLTTLMax (S3's limit).
	TTL time.Duration
	// Filename, when set, makes the store answer with a Content-Disposition
	// that names it (its last path element, without control characters).
	Filename string
	// Inline asks browsers to show the object rather than save it.
	Inline bool
	// ContentType, when set, is the Content-Type the store answers with.
	ContentType string
}

// SignedURL is a presigned URL. It is a bearer credential until Expires:
// never log it.
type SignedURL struct {
	URL     string
	Expires time.Time
}

// ErrTTL means a URL lifetime outside what S3 accepts.
var ErrTTL = errors.New("presigned URL lifetime out of range")

// GetURL presigns a GET of key in bucket (empty: the presigner's bucket).
func (p *Presigner) GetURL(ctx context.Context, bucket, key string, o URLOptions) (SignedURL, error) {
	if o.TTL < URLTTLMin || o.TTL > URLTTLMax {
		return SignedURL{}, fmt.Errorf("storage: %w: %s; DAB_DOWNLOAD_TTL must be %s to %s", ErrTTL, o.TTL, URLTTLMin, URLTTLMax)
	}
	if bucket == "" {
		bucket = p.bucket
	}
	in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
	if o.Filename != "" || o.Inline {
		in.ResponseContentDisposition = aws.String(contentDisposition(o.Filename, o.Inline))
	}
	if o.ContentType != "" {
		in.ResponseContentType = aws.String(o.ContentType)
	}
	signedAt := time.Now()
	req, err := p.api.PresignGetObject(ctx, in, s3.WithPresignExpires(o.TTL))
	if err != nil {
		// The SDK's error names the operation, never a signature.
		return SignedURL{}, fmt.Errorf("storage: presign s3://%s/%s: %w", bucket, key, err)
	}
	return SignedURL{URL: req.URL, Expires: signedAt.Add(o.TTL)}, nil
}

// contentDisposition builds an RFC 6266 value: a quoted ASCII fallback
// name for old clients and, when the name is not plain ASCII, the exact
// name as RFC 8187 filename*. Only the name's last path element is kept
// (a browser must not be told to save into a folder) and control
// characters are dropped (they could end the header).
func contentDisposition(name string, inline bool) string {
	kind := "attachment"
	if inline {
		kind = "inline"
	}
	name = CleanFilename(name)
	if name == "" {
		return kind
	}
	var ascii strings.Builder
	plain := true
	for _, r := range name {
		switch {
		case r > 0x7e:
			ascii.WriteByte('_')
			plain = false
		case r == '"' || r == '\\':
			ascii.WriteByte('\\')
			ascii.WriteRune(r)
		default:
			ascii.WriteRune(r)
		}
	}
	v := kind + `; filename="` + ascii.String() + `"`
	if !plain {
		v += "; filename*=UTF-8''" + rfc8187(name)
	}
	return v
}

// CleanFilename is name as a file name a browser or `dab assets get` may
// save to: the last element of a path (either separator), without control
// characters; "" when nothing usable is left ("." and ".." are no names).
func CleanFilename(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return -1
		}
		return r
	}, name))
	if name == "." || name == ".." {
		return ""
	}
	return name
}

// rfc8187 percent-encodes every byte that is not an attr-char.
func rfc8187(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}
