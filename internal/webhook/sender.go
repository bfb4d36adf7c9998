package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/dab-assets/dab/internal/netguard"
)

// Blocked reports whether a is an address webhooks are not sent to unless
// the endpoint's host is in DAB_WEBHOOKS_ALLOW_PRIVATE: netguard.Blocked,
// the rule imports follow too.
func Blocked(a netip.Addr) bool { return netguard.Blocked(a) }

// ErrBlockedAddress: the endpoint's host resolved to an address webhooks
// are not sent to (Blocked), and DAB_WEBHOOKS_ALLOW_PRIVATE does not name
// it. Trying again does not help.
var ErrBlockedAddress = errors.New("blocked address")

// guard is the dialer's Control: it runs on the address about to be
// connected, after DNS, so no DNS answer can slip past it.
func guard(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot read the address %q being dialed", ErrBlockedAddress, address)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address", ErrBlockedAddress, host)
	}
	if Blocked(a) {
		return fmt.Errorf("%w: %s is private, loopback, link-local, multicast or otherwise not public", ErrBlockedAddress, a)
	}
	return nil
}

// TimeoutDefault bounds one delivery: connecting, sending and the answer.
const TimeoutDefault = 10 * time.Second

// newClient is an HTTP client for deliveries: no proxy (the guard must see
// the receiver's address, not a proxy's), no redirects followed (a
// redirect could lead anywhere: it is an answer like any other), and
// with guarded set every connection checked by guard.
func newClient(guarded bool, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if guarded {
		d.Control = guard
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Sender delivers events to the endpoints of one file.
type Sender struct {
	endpoints []Endpoint
	guarded   *http.Client
	open      *http.Client
	now       func() time.Time
}

// SenderOptions tune a Sender; the zero value is the default.
type SenderOptions struct {
	// Timeout bounds one delivery (TimeoutDefault when 0).
	Timeout time.Duration
}

// NewSender delivers to endpoints.
func NewSender(endpoints []Endpoint, o SenderOptions) *Sender {
	if o.Timeout <= 0 {
		o.Timeout = TimeoutDefault
	}
	return &Sender{endpoints: append([]Endpoint(nil), endpoints...), guarded: newClient(true, o.Timeout), open: newClient(false, o.Timeout), now: time.Now}
}

// Endpoints lists the endpoints, in the file's order.
func (s *Sender) Endpoints() []Endpoint { return append([]Endpoint(nil), s.endpoints...) }

// Endpoint finds an endpoint by its ID.
func (s *Sender) Endpoint(id string) (Endpoint, bool) {
	for _, e := range s.endpoints {
		if e.ID == id {
			return e, true
		}
	}
	return Endpoint{}, false
}

// Close closes idle connections.
func (s *Sender) Close() {
	s.guarded.CloseIdleConnections()
	s.open.CloseIdleConnections()
}

// ErrPermanent is wrapped by delivery errors that trying again cannot
// mend: an endpoint that answers 3xx or 4xx (but 408 and 429), one whose
// address is blocked, one no longer in the file.
var ErrPermanent = errors.New("permanent delivery failure")

// ErrUnknownEndpoint: a delivery names an endpoint that is not in the
// file (any more).
var ErrUnknownEndpoint = errors.New("unknown webhook endpoint")

// RetryAfterError is a retryable failure whose receiver said when to come
// back (429 or 503 with Retry-After in seconds).
type RetryAfterError struct {
	Err   error
	After time.Duration
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }

// Delivery is what a successful delivery got.
type Delivery struct {
	Status   int           `json:"status"`
	Endpoint int           `json:"endpoint"`
	Duration time.Duration `json:"duration_ns"`
}

// Send delivers body, an event's JSON, to endpoint id, signed with
// message ID eventID (the webhook-id header) and the present time. Its
// errors name the endpoint by number and host, never its URL or secret;
// they wrap ErrPermanent when trying again cannot help, and
// RetryAfterError when the receiver asked for a delay.
func (s *Sender) Send(ctx context.Context, id, eventID string, body []byte) (Delivery, error) {
	e, ok := s.Endpoint(id)
	if !ok {
		return Delivery{}, fmt.Errorf("%w: %w: endpoint %s is not in DAB_WEBHOOKS_FILE (removed, or this worker reads another file): nothing was sent", ErrPermanent, ErrUnknownEndpoint, id)
	}
	ts := s.now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url.String(), bytes.NewReader(body))
	if err != nil {
		return Delivery{}, fmt.Errorf("%s: %w: the request cannot be built", e, ErrPermanent)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dab-webhooks/1")
	req.Header.Set("webhook-id", eventID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", Sign(e.key.b, eventID, ts, body))
	client := s.guarded
	if e.AllowPrivate {
		client = s.open
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		// *url.Error quotes the URL, which may carry a token: keep the cause only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, ErrBlockedAddress) {
			return Delivery{}, fmt.Errorf("%s: %w: %w: nothing was sent; if the host is yours, name it in DAB_WEBHOOKS_ALLOW_PRIVATE", e, ErrPermanent, err)
		}
		return Delivery{}, fmt.Errorf("%s: not delivered (tried again later): %w", e, err)
	}
	snippet := readSnippet(resp.Body)
	resp.Body.Close()
	d := Delivery{Status: resp.StatusCode, Endpoint: e.N, Duration: time.Since(start)}
	code := resp.StatusCode
	answered := fmt.Sprintf("%s: answered %d %s", e, code, http.StatusText(code))
	if snippet != "" {
		answered += " (" + snippet + ")"
	}
	switch {
	case code >= 200 && code < 300:
		return d, nil
	case code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		err := fmt.Errorf("%s: tried again later", answered)
		if after, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
			return d, &RetryAfterError{Err: err, After: after}
		}
		return d, err
	case code >= 300 && code < 400:
		return d, fmt.Errorf("%s: %w: dab does not follow redirects; put the URL events should go to in DAB_WEBHOOKS_FILE", answered, ErrPermanent)
	default:
		return d, fmt.Errorf("%s: %w: the receiver refused the event; fix the receiver, then resend it from the console", answered, ErrPermanent)
	}
}

// retryAfter reads a Retry-After of whole seconds (at most a day).
func retryAfter(v string) (time.Duration, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 || n > 86400 {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// readSnippet reads the answer (at most 64 KiB, so the connection can be
// reused) and keeps its first 200 printable characters for the error.
func readSnippet(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 64<<10))
	s := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, strings.ToValidUTF8(string(b), ""))
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "..."
	}
	return s
}

// Sign is the Standard Webhooks signature of body: "v1," and the base64 of
// the HMAC-SHA256, keyed with the secret's bytes, of "msgID.timestamp.body".
func Sign(key []byte, msgID string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(msgID + "." + strconv.FormatInt(timestamp, 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ErrBadSignature: a delivery's signature or timestamp does not verify.
var ErrBadSignature = errors.New("bad webhook signature")

// Verify checks a delivery as a receiver does: secret is the endpoint's
// "whsec_..." secret, the headers are webhook-id, webhook-timestamp and
// webhook-signature (a space-separated list of "v1,<base64>"), and the
// timestamp must be within tolerance of now (replays of old deliveries
// are refused).
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := decodeSecret(secret)
	if err != nil {
		return err
	}
	id, tsText := h.Get("webhook-id"), h.Get("webhook-timestamp")
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if id == "" || err != nil {
		return fmt.Errorf("%w: webhook-id or webhook-timestamp is missing or malformed", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: the timestamp is %s away from now (tolerance %s)", ErrBadSignature, d.Round(time.Second), tolerance)
	}
	want := Sign(key, id, ts, body)
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("%w: no signature matches", ErrBadSignature)
}
