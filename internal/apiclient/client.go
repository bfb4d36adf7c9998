// Package apiclient talks to a dab HTTP API: uploads (small files in one PUT,
// large ones over tus, resumed after a cut-off, also by a later run), tasks
// and assets. The dab CLI uses it with --server.
package apiclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/redact"
)

// ResumableFrom is the file size from which uploads go over tus.
const ResumableFrom = 16 << 20

// Client is one API server with one token.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
	// StateDir remembers the tus URLs of unfinished uploads, so running the
	// same upload again resumes it. Empty disables that.
	StateDir string
}

// New returns a client for server (http:// or https://).
func New(server, token string) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("DAB_SERVER %q is not an http:// or https:// URL", server)
	}
	c := &Client{base: u, token: token}
	c.http = &http.Client{CheckRedirect: c.checkRedirect}
	return c, nil
}

// checkRedirect keeps the token to the server: Go's client passes an
// Authorization header on to any port of the same host name (a store on
// 127.0.0.1:7070 behind an API on 127.0.0.1:8080 would receive it).
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if !sameOrigin(req.URL, c.base) {
		req.Header.Del("Authorization")
		req.Header.Del("Cookie")
	}
	return nil
}

func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(canonicalHost(a), canonicalHost(b))
}

// canonicalHost is host:port with the scheme's default port made explicit.
func canonicalHost(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if strings.EqualFold(u.Scheme, "https") {
		return u.Host + ":443"
	}
	return u.Host + ":80"
}

// Error is an error answer from the server.
type Error struct {
	Status        int
	Code, Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("server answered %d %s: %s", e.Status, e.Code, e.Message)
}

func (c *Client) url(p string) string { return c.base.String() + p }

func (c *Client) do(ctx context.Context, method, u string, body io.Reader, hdr http.Header, out any) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if f, ok := body.(interface{ Size() int64 }); ok {
		req.ContentLength = f.Size()
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// DAB_SERVER may carry a password or a token: never quote it.
		return nil, redact.Error(fmt.Errorf("%s %s: %w", method, u, err), c.base.String(), u)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return resp, errorOf(resp)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp, redact.Error(fmt.Errorf("%s %s: bad answer: %w", method, u, err), c.base.String(), u)
		}
	}
	return resp, nil
}

// errorOf reads an error answer of the server.
func errorOf(resp *http.Response) error {
	var eb api.ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &eb) != nil || eb.Error.Code == "" {
		eb.Error.Code, eb.Error.Message = http.StatusText(resp.StatusCode), strings.TrimSpace(string(b))
	}
	if resp.StatusCode == http.StatusUnauthorized {
		eb.Error.Message += " (give a token with --token or DAB_TOKEN)"
	}
	return &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
}

// DownloadURL asks the server for a presigned URL of an asset's object
// (the Location of its 302 to the store), without following it. The URL
// is a bearer credential until it expires: do not print or log it.
func (c *Client) DownloadURL(ctx context.Context, id string) (string, error) {
	u := c.url("/v1/assets/" + url.PathEscape(id) + "/download")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	noFollow := &http.Client{Transport: c.http.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 400:
		return "", errorOf(resp)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		loc, err := resp.Location()
		if err != nil {
			return "", fmt.Errorf("GET %s: %d without a usable Location: %w", u, resp.StatusCode, err)
		}
		return loc.String(), nil
	}
	return "", fmt.Errorf("GET %s: the server answered %d, not a redirect to the store: is it a dab server with downloads?", u, resp.StatusCode)
}

// Download opens an asset's bytes: the server's presigned URL, fetched
// from the store with no dab credentials. The caller closes the body.
func (c *Client) Download(ctx context.Context, id string) (io.ReadCloser, int64, error) {
	u, err := c.DownloadURL(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	return Fetch(ctx, u)
}

// fetchClient sends no token, no cookie and follows no redirect: a
// presigned URL is answered by the store itself.
var fetchClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// Fetch GETs a presigned URL and returns its body and length (-1 when
// unknown). Its errors name the store and the object, never the URL's
// query (the signature).
func Fetch(ctx context.Context, presigned string) (io.ReadCloser, int64, error) {
	u, err := url.Parse(presigned)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, 0, errors.New("the download URL is not an http(s) URL")
	}
	where := u.Scheme + "://" + u.Host + u.EscapedPath()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, presigned, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", where, err)
	}
	resp, err := fetchClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text quotes the whole URL
		}
		return nil, 0, fmt.Errorf("GET %s: %w", where, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
		var s3err struct {
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		}
		detail := http.StatusText(resp.StatusCode)
		if xml.Unmarshal(b, &s3err) == nil && s3err.Code != "" {
			detail = s3err.Code + ": " + s3err.Message
		}
		return nil, 0, fmt.Errorf("the store answered %d (%s) for %s: the download URL may have expired (ask again) or the object is gone", resp.StatusCode, detail, where)
	}
	return resp.Body, resp.ContentLength, nil
}

// Task reads a task.
func (c *Client) Task(ctx context.Context, id string) (api.Task, error) {
	var t api.Task
	_, err := c.do(ctx, http.MethodGet, c.url("/v1/tasks/"+url.PathEscape(id)), nil, nil, &t)
	return t, err
}

// Asset reads one record.
func (c *Client) Asset(ctx context.Context, id string) (asset.Record, error) {
	var r asset.Record
	_, err := c.do(ctx, http.MethodGet, c.url("/v1/assets/"+url.PathEscape(id)), nil, nil, &r)
	return r, err
}

// Assets reads a page of records.
func (c *Client) Assets(ctx context.Context, o asset.ListOptions) (asset.Page, error) {
	q := url.Values{}
	if o.Type != "" {
		q.Set("type", o.Type)
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var p asset.Page
	_, err := c.do(ctx, http.MethodGet, c.url("/v1/assets?"+q.Encode()), nil, nil, &p)
	return p, err
}

// UploadInput names a file to upload.
type UploadInput struct {
	File     string
	Type     string
	Path     string // below the type folder; default the file's base name
	Metadata map[string]string
	// Progress, when set, is called with the bytes sent so far.
	Progress func(int64)
}

// Upload sends a file: one PUT below ResumableFrom, tus above (resumed after
// errors, and by a later run with the same StateDir).
func (c *Client) Upload(ctx context.Context, in UploadInput) (api.Accepted, error) {
	f, err := os.Open(in.File)
	if err != nil {
		return api.Accepted{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return api.Accepted{}, err
	}
	if !st.Mode().IsRegular() {
		return api.Accepted{}, fmt.Errorf("%s is not a regular file", in.File)
	}
	if in.Path == "" {
		in.Path = filepath.Base(in.File)
	}
	if st.Size() >= ResumableFrom {
		return c.uploadTus(ctx, f, st, in)
	}
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	if len(in.Metadata) > 0 {
		b, _ := json.Marshal(in.Metadata)
		hdr.Set("Dab-Metadata", string(b))
	}
	var body io.Reader = io.NewSectionReader(f, 0, st.Size())
	if in.Progress != nil {
		body = &counting{r: body, size: st.Size(), report: in.Progress}
	}
	var acc api.Accepted
	segs := strings.Split(in.Path, "/")
	for i := range segs {
		segs[i] = url.PathEscape(segs[i])
	}
	_, err = c.do(ctx, http.MethodPut, c.url("/v1/assets/"+url.PathEscape(in.Type)+"/"+strings.Join(segs, "/")), body, hdr, &acc)
	return acc, err
}

type counting struct {
	r      io.Reader
	n      int64
	size   int64
	report func(int64)
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.report(c.n)
	return n, err
}

// Size lets the request carry a Content-Length.
func (c *counting) Size() int64 { return c.size }

// uploadTus creates (or resumes) a tus upload and sends the rest, retrying
// after errors from the offset the server has.
func (c *Client) uploadTus(ctx context.Context, f *os.File, st os.FileInfo, in UploadInput) (api.Accepted, error) {
	stateFile := c.stateFile(in.File, st, in)
	loc := ""
	if stateFile != "" {
		if b, err := os.ReadFile(stateFile); err == nil {
			loc = strings.TrimSpace(string(b))
		}
	}
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return api.Accepted{}, ctx.Err()
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		if loc == "" {
			l, err := c.tusCreate(ctx, st.Size(), in)
			if err != nil {
				var ae *Error
				if errors.As(err, &ae) && ae.Status < 500 {
					return api.Accepted{}, err // refused: retrying will not help
				}
				lastErr = err
				continue
			}
			loc = l
			if stateFile != "" {
				os.MkdirAll(filepath.Dir(stateFile), 0o700)
				os.WriteFile(stateFile, []byte(loc), 0o600)
			}
		}
		offset, err := c.tusOffset(ctx, loc)
		if err != nil {
			var ae *Error
			if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusGone) {
				loc = "" // the server forgot it: start over
			}
			lastErr = err
			continue
		}
		acc, err := c.tusSend(ctx, f, st.Size(), offset, loc, in.Progress)
		if err == nil {
			if stateFile != "" {
				os.Remove(stateFile)
			}
			return acc, nil
		}
		var ae *Error
		if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusConflict {
			return api.Accepted{}, err
		}
		lastErr = err
	}
	return api.Accepted{}, fmt.Errorf("resumable upload of %s failed after retries (run the same command again to resume): %w", in.File, lastErr)
}

func (c *Client) stateFile(path string, st os.FileInfo, in UploadInput) string {
	if c.StateDir == "" {
		return ""
	}
	abs, _ := filepath.Abs(path)
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d\x00%s\x00%s", c.base, abs, st.Size(), st.ModTime().UnixNano(), in.Type, in.Path)
	return filepath.Join(c.StateDir, hex.EncodeToString(h.Sum(nil))[:32]+".url")
}

func tusHeader() http.Header { return http.Header{"Tus-Resumable": {"1.0.0"}} }

func (c *Client) tusCreate(ctx context.Context, size int64, in UploadInput) (string, error) {
	md := map[string]string{"filename": in.Path, "type": in.Type}
	if len(in.Metadata) > 0 {
		b, _ := json.Marshal(in.Metadata)
		md["metadata"] = string(b)
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+" "+base64.StdEncoding.EncodeToString([]byte(md[k])))
	}
	hdr := tusHeader()
	hdr.Set("Upload-Length", strconv.FormatInt(size, 10))
	hdr.Set("Upload-Metadata", strings.Join(parts, ","))
	resp, err := c.do(ctx, http.MethodPost, c.url("/v1/uploads/"), nil, hdr, nil)
	if err != nil {
		return "", err
	}
	loc, err := resp.Location()
	if err != nil {
		return "", fmt.Errorf("tus: the server gave no upload URL: %w", err)
	}
	return loc.String(), nil
}

func (c *Client) tusOffset(ctx context.Context, loc string) (int64, error) {
	resp, err := c.do(ctx, http.MethodHead, loc, nil, tusHeader(), nil)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
}

func (c *Client) tusSend(ctx context.Context, f *os.File, size, offset int64, loc string, progress func(int64)) (api.Accepted, error) {
	hdr := tusHeader()
	hdr.Set("Upload-Offset", strconv.FormatInt(offset, 10))
	hdr.Set("Content-Type", "application/offset+octet-stream")
	var body io.Reader = io.NewSectionReader(f, offset, size-offset)
	cb := &counting{r: body, size: size - offset, report: func(n int64) {
		if progress != nil {
			progress(offset + n)
		}
	}}
	resp, err := c.do(ctx, http.MethodPatch, loc, cb, hdr, nil)
	if err != nil {
		return api.Accepted{}, err
	}
	id := resp.Header.Get("Dab-Task-Id")
	if id == "" {
		return api.Accepted{}, errors.New("tus: the final answer has no Dab-Task-Id")
	}
	h := resp.Header
	return api.Accepted{TaskID: id, StatusURL: h.Get("Dab-Status-Url"), SpoolID: h.Get("Dab-Spool-Id"),
		Key: h.Get("Dab-S3-Key"), SHA256: h.Get("Dab-Sha256"), Size: size}, nil
}

// Grant gives credits to an account (admin), once per key.
func (c *Client) Grant(ctx context.Context, key, account string, credits int64) (ledger.GrantResult, error) {
	var r ledger.GrantResult
	body, _ := json.Marshal(map[string]int64{"credits": credits})
	_, err := c.do(ctx, http.MethodPost, c.url("/v1/accounts/"+url.PathEscape(account)+"/grants"), bytes.NewReader(body),
		http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {key}}, &r)
	return r, err
}

// Account reads a balance and its latest entries.
func (c *Client) Account(ctx context.Context, id string) (ledger.Account, error) {
	var a ledger.Account
	_, err := c.do(ctx, http.MethodGet, c.url("/v1/accounts/"+url.PathEscape(id)), nil, nil, &a)
	return a, err
}

// Purchase sends a purchase; the ID is its idempotency key.
func (c *Client) Purchase(ctx context.Context, p ledger.PurchaseRequest) (ledger.PurchaseResult, error) {
	var r ledger.PurchaseResult
	body, _ := json.Marshal(map[string]any{"asset_id": p.AssetID, "buyer_id": p.BuyerID, "credits": p.Credits})
	_, err := c.do(ctx, http.MethodPost, c.url("/v1/purchases"), bytes.NewReader(body),
		http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {p.PurchaseID}}, &r)
	return r, err
}

// GetPurchase reads a purchase's state.
func (c *Client) GetPurchase(ctx context.Context, id string) (ledger.PurchaseResult, error) {
	var r ledger.PurchaseResult
	_, err := c.do(ctx, http.MethodGet, c.url("/v1/purchases/"+url.PathEscape(id)), nil, nil, &r)
	return r, err
}

// SetListing puts an owned asset up for sale at credits (its owner's bound
// token, or admin).
func (c *Client) SetListing(ctx context.Context, id string, credits int64) (asset.Record, error) {
	var r asset.Record
	body, _ := json.Marshal(map[string]int64{"credits": credits})
	_, err := c.do(ctx, http.MethodPut, c.url("/v1/assets/"+url.PathEscape(id)+"/listing"), bytes.NewReader(body),
		http.Header{"Content-Type": {"application/json"}}, &r)
	return r, err
}

// ClearListing takes an asset off sale.
func (c *Client) ClearListing(ctx context.Context, id string) (asset.Record, error) {
	var r asset.Record
	_, err := c.do(ctx, http.MethodDelete, c.url("/v1/assets/"+url.PathEscape(id)+"/listing"), nil, nil, &r)
	return r, err
}

// Import queues an import (POST /v1/imports); replayed is true when the
// key's import was queued before.
func (c *Client) Import(ctx context.Context, req api.ImportRequest) (api.ImportAnswer, bool, error) {
	var r api.ImportAnswer
	body, _ := json.Marshal(req)
	resp, err := c.do(ctx, http.MethodPost, c.url("/v1/imports"), bytes.NewReader(body),
		http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {req.Key}}, &r)
	return r, err == nil && resp != nil && resp.StatusCode == http.StatusOK, err
}

// SetPrice sets what the house sells an unowned asset for (admin).
func (c *Client) SetPrice(ctx context.Context, id string, credits int64) (asset.Record, error) {
	var r asset.Record
	body, _ := json.Marshal(map[string]int64{"credits": credits})
	_, err := c.do(ctx, http.MethodPost, c.url("/v1/assets/"+url.PathEscape(id)+"/price"), bytes.NewReader(body),
		http.Header{"Content-Type": {"application/json"}}, &r)
	return r, err
}

// ClearPrice removes an asset's price (admin).
func (c *Client) ClearPrice(ctx context.Context, id string) (asset.Record, error) {
	var r asset.Record
	_, err := c.do(ctx, http.MethodDelete, c.url("/v1/assets/"+url.PathEscape(id)+"/price"), nil, nil, &r)
	return r, err
}
