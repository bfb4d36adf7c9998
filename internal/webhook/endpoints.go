// Package webhook delivers dab's events to other systems' HTTP endpoints,
// signed by the Standard Webhooks specification
// (https://www.standardwebhooks.com): the endpoints file (DAB_WEBHOOKS_FILE),
// the signature, and a sender whose connections never reach a private,
// loopback, link-local, multicast or unspecified address unless the
// endpoint's host is allowed to (DAB_WEBHOOKS_ALLOW_PRIVATE), checked on
// the address actually dialed, so that a DNS answer that changes between a
// check and the connection (DNS rebinding) cannot get past it.
//
// What delivers when (asynq tasks, retries, the dispatcher that turns
// events into tasks) is the worker's; this package sends one event to one
// endpoint and says whether trying again can help.
package webhook

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/netguard"
)

// Secret bounds: the Standard Webhooks secret is "whsec_" and the base64
// of 24 to 64 random bytes.
const (
	SecretPrefix   = "whsec_"
	SecretBytesMin = 24
	SecretBytesMax = 64
)

// Endpoint is one line of the endpoints file. Its secret is kept out of
// reach of fmt and slog: String, GoString and LogValue name the endpoint
// by its number and host only.
type Endpoint struct {
	// N is the endpoint's number: its place in the file, from 1 (the
	// console's /webhooks/{n}).
	N int
	// Line is its line in the file.
	Line int
	// ID names the endpoint in task IDs and payloads: the first 16 hex
	// digits of the SHA-256 of its URL (never the URL itself: the monitor
	// shows payloads, and a URL may carry a token).
	ID string
	// Types are the event types it receives; empty means every type.
	Types []string
	// AllowPrivate: its host is in DAB_WEBHOOKS_ALLOW_PRIVATE, so the
	// sender may connect to a private or loopback address for it.
	AllowPrivate bool

	url *url.URL
	key *signingKey
}

// signingKey is the decoded secret. Behind a pointer in Endpoint, so that
// even %+v of a struct holding an Endpoint prints an address, not the key.
type signingKey struct{ b []byte }

// URL is the endpoint's URL (it may carry a token in its query: log
// Display, not this).
func (e Endpoint) URL() string {
	if e.url == nil {
		return ""
	}
	return e.url.String()
}

// Host is the URL's host name (no port).
func (e Endpoint) Host() string {
	if e.url == nil {
		return ""
	}
	return e.url.Hostname()
}

// Display is the URL without its query (which may carry a token):
// scheme://host[:port]/path.
func (e Endpoint) Display() string {
	if e.url == nil {
		return ""
	}
	u := url.URL{Scheme: e.url.Scheme, Host: e.url.Host, Path: e.url.Path}
	s := u.String()
	if e.url.RawQuery != "" {
		s += "?…"
	}
	return s
}

// String names the endpoint for logs and errors: its number and host.
func (e Endpoint) String() string { return fmt.Sprintf("webhook endpoint %d (%s)", e.N, e.Host()) }

// GoString is String: %#v must not print the secret either.
func (e Endpoint) GoString() string { return e.String() }

// Receives reports whether the endpoint takes events of type t.
func (e Endpoint) Receives(t string) bool {
	if len(e.Types) == 0 {
		return true
	}
	for _, x := range e.Types {
		if x == t {
			return true
		}
	}
	return false
}

// TypesText is the endpoint's types as the file writes them ("*" for all).
func (e Endpoint) TypesText() string {
	if len(e.Types) == 0 {
		return "*"
	}
	return strings.Join(e.Types, ",")
}

// EndpointID is the ID of the endpoint at rawURL.
func EndpointID(rawURL string) string {
	sum := sha256.Sum256([]byte(rawURL))
	return hex.EncodeToString(sum[:8])
}

// Options are where the endpoints may be.
type Options struct {
	// AllowHTTP are hosts whose endpoints may be plain http://
	// (DAB_WEBHOOKS_ALLOW_HTTP: loopback development); every other
	// endpoint must be https://.
	AllowHTTP []string
	// AllowPrivate are hosts whose endpoints may resolve to private,
	// loopback, link-local or other non-public addresses
	// (DAB_WEBHOOKS_ALLOW_PRIVATE).
	AllowPrivate []string
}

// hostIn reports whether host is in list (netguard.HostIn).
func hostIn(list []string, host string) bool { return netguard.HostIn(list, host) }

// CheckHost validates an entry of DAB_WEBHOOKS_ALLOW_HTTP or
// DAB_WEBHOOKS_ALLOW_PRIVATE (netguard.CheckHost).
func CheckHost(h string) error { return netguard.CheckHost(h) }

// Load reads the endpoints file at path (DAB_WEBHOOKS_FILE); an empty path
// means no endpoints.
func Load(path string, o Options) ([]Endpoint, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("DAB_WEBHOOKS_FILE: %w", err)
	}
	defer f.Close()
	return Parse(f, path, o)
}

// ErrFile: the endpoints file has a line that is not an endpoint.
var ErrFile = errors.New("bad webhooks file")

// Parse reads an endpoints file: one endpoint a line, "URL SECRET
// [TYPES]", where URL is https:// (http:// for a host in o.AllowHTTP)
// without credentials or fragment, SECRET is "whsec_" and the base64 of
// 24 to 64 bytes, and TYPES is a comma-separated list of event types or
// "*" (the default: all). '#' starts a comment (a whole line, or after the
// fields); blank lines are skipped. Errors wrap ErrFile, name the file and
// the line, and never quote a secret or a URL (either may hold one).
func Parse(r io.Reader, name string, o Options) ([]Endpoint, error) {
	for _, l := range []struct {
		name  string
		hosts []string
	}{{"DAB_WEBHOOKS_ALLOW_HTTP", o.AllowHTTP}, {"DAB_WEBHOOKS_ALLOW_PRIVATE", o.AllowPrivate}} {
		for _, h := range l.hosts {
			if err := CheckHost(h); err != nil {
				return nil, fmt.Errorf("%w: %s: allowed host: %v", ErrFile, l.name, err)
			}
		}
	}
	var out []Endpoint
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 16<<10)
	n := 0
	for sc.Scan() {
		n++
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: DAB_WEBHOOKS_FILE %s line %d: %s", ErrFile, name, n, fmt.Sprintf(format, args...))
		}
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if strings.HasPrefix(f, "#") {
				fields = fields[:i]
				break
			}
		}
		if len(fields) == 0 {
			continue
		}
		if len(fields) < 2 || len(fields) > 3 {
			return nil, bad("want \"URL SECRET [TYPES]\" (%d fields)", len(fields))
		}
		u, err := checkURL(fields[0], o)
		if err != nil {
			return nil, bad("%v", err)
		}
		key, err := decodeSecret(fields[1])
		if err != nil {
			return nil, bad("%v", err)
		}
		var types []string
		if len(fields) == 3 {
			if types, err = parseTypes(fields[2]); err != nil {
				return nil, bad("%v", err)
			}
		}
		raw := u.String()
		if before, dup := seen[raw]; dup {
			return nil, bad("the same URL as line %d: give each endpoint once (with every type it takes)", before)
		}
		seen[raw] = n
		out = append(out, Endpoint{N: len(out) + 1, Line: n, ID: EndpointID(raw), Types: types,
			AllowPrivate: hostIn(o.AllowPrivate, u.Hostname()), url: u, key: &signingKey{b: key}})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: DAB_WEBHOOKS_FILE %s line %d: longer than 16 KiB", ErrFile, name, n+1)
		}
		return nil, fmt.Errorf("%w: DAB_WEBHOOKS_FILE %s: %v", ErrFile, name, err)
	}
	return out, nil
}

// checkURL validates an endpoint URL. Its errors describe the URL's
// problem without quoting it.
func checkURL(raw string, o Options) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Opaque != "" || u.Host == "" {
		return nil, errors.New("the URL (field 1) is not an absolute URL such as https://hooks.example.com/dab")
	}
	host := u.Hostname()
	switch u.Scheme {
	case "https":
	case "http":
		if !hostIn(o.AllowHTTP, host) {
			return nil, fmt.Errorf("the URL of host %s is http://: use https://, or name the host in DAB_WEBHOOKS_ALLOW_HTTP (loopback development only: the events travel in the clear)", host)
		}
	default:
		return nil, fmt.Errorf("the URL of host %s is not https://", host)
	}
	if u.User != nil {
		return nil, fmt.Errorf("the URL of host %s carries credentials (user:password@): remove them; the signature authenticates dab to the receiver", host)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, fmt.Errorf("the URL of host %s has a fragment (#...): it is never sent; remove it", host)
	}
	if err := CheckHost(host); err != nil {
		return nil, fmt.Errorf("the URL's host: %v", err)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("the URL of host %s has a bad port (1 to 65535)", host)
		}
	}
	if a, err := netip.ParseAddr(netguard.NormalHost(host)); err == nil && Blocked(a) && !hostIn(o.AllowPrivate, host) {
		return nil, fmt.Errorf("the URL's address %s is private, loopback, link-local, multicast or otherwise not public: dab does not send events there unless DAB_WEBHOOKS_ALLOW_PRIVATE names it", a)
	}
	return u, nil
}

// decodeSecret reads a Standard Webhooks secret. Its errors never quote it.
func decodeSecret(s string) ([]byte, error) {
	const form = `the secret (field 2) must be "whsec_" followed by the base64 of 24 to 64 random bytes (make one with: echo "whsec_$(openssl rand -base64 32)")`
	b64, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, errors.New(form)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%s: its base64 does not decode", form)
	}
	if len(key) < SecretBytesMin || len(key) > SecretBytesMax {
		return nil, fmt.Errorf("%s: it holds %d bytes", form, len(key))
	}
	return key, nil
}

// parseTypes reads the TYPES field: "*" or event types, comma-separated.
func parseTypes(s string) ([]string, error) {
	if s == "*" {
		return nil, nil
	}
	set := map[string]bool{}
	for _, t := range strings.Split(s, ",") {
		switch {
		case t == "*":
			return nil, errors.New(`"*" (every type) stands alone in the types field`)
		case t == "":
			return nil, errors.New("the types field has an empty entry (two commas, or one at an end)")
		case strings.Contains(t, SecretPrefix):
			return nil, errors.New("the types field (field 3) holds a secret: write URL, then SECRET, then the types")
		case !event.KnownType(t):
			return nil, fmt.Errorf("unknown event type %q: use * or a comma-separated list of %s", clip(t), strings.Join(event.Types(), ", "))
		}
		set[t] = true
	}
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// DeliveryInfo is one delivery task of an endpoint, for the console.
type DeliveryInfo struct {
	TaskID    string
	EventID   string
	EventType string
	// State is pending, active, scheduled, retry, archived or completed.
	State     string
	Attempts  int
	LastError string
	// At is when it completed, last failed, or is due.
	At time.Time
	// Resend: the task is a resend from the console.
	Resend bool
}
