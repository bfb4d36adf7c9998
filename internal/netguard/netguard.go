// Package netguard makes HTTP clients that fetch from addresses someone
// else chose (an import's source URL) without letting that someone reach
// what only dab can reach: loopback, private networks, link-local (cloud
// metadata at 169.254.169.254), multicast and unspecified addresses are
// refused unless the operator names the host. The check runs on the IP
// actually dialed, after DNS, so a name that resolves to a public address
// for the check and a private one for the dial (DNS rebinding) gets
// nowhere; redirects are not followed.
package netguard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// ErrRefused is wrapped by every refusal of an address or scheme.
var ErrRefused = errors.New("address refused")

// Options say which hosts may be reached despite the rules.
type Options struct {
	// AllowHTTP lists hosts that may be fetched over plain http:// (for
	// development on loopback); every other URL must be https://.
	AllowHTTP []string
	// AllowPrivate lists hosts that may resolve to loopback, private or
	// link-local addresses.
	AllowPrivate []string
	// TLS, when set, is the TLS configuration (a private CA).
	TLS *tls.Config
	// Timeout bounds connecting and the wait for the response headers.
	Timeout time.Duration
}

// Guard checks URLs and dials only allowed addresses.
type Guard struct {
	o Options
}

// New returns a Guard.
func New(o Options) *Guard {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	return &Guard{o: o}
}

// CheckURL refuses a URL that is not https:// (or http:// to a host in
// AllowHTTP), has user info, or has no host.
func (g *Guard) CheckURL(raw string) error {
	u, err := parseURL(raw)
	if err != nil {
		return err
	}
	host := u.Hostname()
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && HostIn(g.o.AllowHTTP, host):
	case u.Scheme == "http":
		return fmt.Errorf("%w: %s is plain http: use https://, or name the host %q in DAB_IMPORT_ALLOW_HTTP (development only)", ErrRefused, redact(raw), host)
	default:
		return fmt.Errorf("%w: scheme %q: use https://", ErrRefused, u.Scheme)
	}
	return nil
}

// Client is an HTTP client that dials only allowed addresses and follows
// no redirect.
func (g *Guard) Client() *http.Client {
	d := &net.Dialer{Timeout: g.o.Timeout}
	tr := &http.Transport{
		Proxy:                 nil, // a proxy would dial for us, unchecked
		DialContext:           g.dialer(d),
		TLSClientConfig:       g.o.TLS,
		TLSHandshakeTimeout:   g.o.Timeout,
		ResponseHeaderTimeout: g.o.Timeout,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			return fmt.Errorf("%w: the server redirected to %s: give the final URL", ErrRefused, redact(req.URL.String()))
		},
	}
}

// dialer resolves the host itself, checks every address and dials a
// checked one: the address dialed is the address checked.
func (g *Guard) dialer(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		private := HostIn(g.o.AllowPrivate, host)
		var lastErr error
		for _, ip := range ips {
			if Blocked(ip) && !private {
				lastErr = fmt.Errorf("%w: %s resolves to %s, a loopback, private, link-local or otherwise non-public address: dab does not fetch from there unless DAB_IMPORT_ALLOW_PRIVATE names %q", ErrRefused, host, ip, host)
				continue
			}
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			lastErr = err
		}
		if lastErr == nil {
			lastErr = fmt.Errorf("%s has no address", host)
		}
		return nil, lastErr
	}
}

// Blocked reports whether a is an address dab does not fetch from or
// deliver to unless the operator names the host: loopback, private
// (RFC 1918, fc00::/7), link-local (169.254.0.0/16, the cloud metadata
// services' home, and fe80::/10), multicast, unspecified, and the other
// ranges that are not the public internet (0.0.0.0/8, 100.64.0.0/10,
// 192.0.0.0/24, the documentation and benchmark ranges, 240.0.0.0/4,
// fec0::/10, 100::/64, 2001:db8::/32). An IPv4 address mapped into IPv6
// (::ffff:10.0.0.1) or embedded by NAT64 (64:ff9b::/96) or 6to4 (2002::/16)
// is judged as the IPv4 address it reaches.
func Blocked(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return true
	}
	b := a.As16()
	switch {
	case a.Is6() && netip.MustParsePrefix("64:ff9b::/96").Contains(a):
		return Blocked(netip.AddrFrom4([4]byte(b[12:16])))
	case a.Is6() && netip.MustParsePrefix("2002::/16").Contains(a):
		return Blocked(netip.AddrFrom4([4]byte(b[2:6])))
	}
	for _, p := range []string{
		"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "240.0.0.0/4",
		"::/96", "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:db8::/32", "fec0::/10",
	} {
		if netip.MustParsePrefix(p).Contains(a) {
			return true
		}
	}
	return false
}

// parseURL parses an absolute URL with a host and no user info (a password
// in a URL would end up in logs and task payloads).
func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL, password and query included.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: not a URL: %v", ErrRefused, err)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: %s has no host", ErrRefused, redact(raw))
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: %s carries a user name or password: dab does not send credentials in URLs", ErrRefused, redact(raw))
	}
	return u, nil
}

// redact shows a URL without its query and user info: presigned URLs
// carry their signature in the query.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a URL that does not parse)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// CheckURLSyntax checks what CheckURL checks that needs no settings: the
// URL parses, has a host and carries no user name or password. Errors wrap
// ErrRefused and never show the URL's user info or query.
func CheckURLSyntax(raw string) error {
	_, err := parseURL(raw)
	return err
}

// RedactError replaces the URL in an HTTP client's error (*url.Error, which
// repeats the whole URL, a redirect's target included) with its redacted
// form, so a presigned URL's signature stays out of logs and task errors.
func RedactError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = redact(ue.URL)
	}
	return err
}

// Redact is redact for callers that report a source URL.
func Redact(raw string) string { return redact(raw) }

// TLSWithCAs returns a TLS configuration that trusts the system's CAs and
// those in the PEM file caFile ("" : the system's only, nil config).
func TLSWithCAs(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// HostIn reports whether host is in list, as allow lists compare hosts
// (NormalHost).
func HostIn(list []string, host string) bool {
	host = NormalHost(host)
	for _, h := range list {
		if NormalHost(h) == host {
			return true
		}
	}
	return false
}

// NormalHost is a host as allow lists compare it: lower case, no
// brackets, an IP address in its canonical form.
func NormalHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(h), "["), "]"))
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().String()
	}
	return strings.TrimSuffix(h, ".")
}

var hostPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$`)

// CheckHost validates an entry of an allow list: a host name or an IP
// address, without a scheme, port or path.
func CheckHost(h string) error {
	n := NormalHost(h)
	if _, err := netip.ParseAddr(n); err == nil {
		return nil
	}
	if len(n) > 253 || !hostPattern.MatchString(n) {
		return fmt.Errorf("%q is not a host name or IP address (give the host alone: no scheme, port or path)", h)
	}
	return nil
}
