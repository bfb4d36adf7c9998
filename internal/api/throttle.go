package api

import (
	"container/list"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Bounds of the throttle on failed logins (console form and bearer tokens).
const (
	// LoginFailuresPerMinuteDefault is how many failed logins one client
	// address may make in a burst, and per minute after that. Tokens are
	// long random strings, so this changes nothing for people who mistype
	// and stops scripts that guess.
	LoginFailuresPerMinuteDefault = 10
	// ThrottleAddressesMax bounds how many client addresses the throttle
	// remembers; beyond it the address that failed longest ago is forgotten,
	// so memory stays bounded whatever the number of attackers.
	ThrottleAddressesMax = 10_000
)

// Throttle limits failed attempts per client address with a token bucket:
// each address has up to burst failures, refilled at perMinute per minute.
// Before a credential is checked, an address without an attempt left is
// refused (Allowed); only a failure takes an attempt (Fail), so successful
// requests, however many at once, are never slowed and leave no state. A
// failure may take the bucket below zero: concurrent guesses that all
// passed Allowed are all counted, and lock the address out for longer
// (never past failBelowMax refills). A success does not reset earlier
// failures, so a valid low-scope token cannot be used to keep guessing
// others. An address that keeps no failure within the refill time is
// forgotten. A nil *Throttle allows everything.
type Throttle struct {
	mu     sync.Mutex
	burst  float64
	rate   float64 // attempts per second
	max    int
	now    func() time.Time
	byAddr map[string]*list.Element
	// order has the most recently used address at the front.
	order *list.List
}

type throttleEntry struct {
	addr   string
	tokens float64
	at     time.Time
}

// NewThrottle allows perMinute failed attempts per address (also the burst)
// and remembers at most maxAddresses addresses.
func NewThrottle(perMinute, maxAddresses int) *Throttle {
	perMinute, maxAddresses = max(perMinute, 1), max(maxAddresses, 1)
	return &Throttle{burst: float64(perMinute), rate: float64(perMinute) / 60, max: maxAddresses,
		now: time.Now, byAddr: map[string]*list.Element{}, order: list.New()}
}

// refill brings e up to now and reports whether it is full again.
func (t *Throttle) refill(e *throttleEntry, now time.Time) bool {
	if d := now.Sub(e.at); d > 0 {
		e.tokens = math.Min(t.burst, e.tokens+d.Seconds()*t.rate)
		e.at = now
	}
	return e.tokens >= t.burst
}

// failBelowMax bounds how far below zero failures take a bucket, in
// bursts: the longest lockout is that many refills.
const failBelowMax = 10

// Allowed reports whether addr may try a credential now; when not, how
// long until it may. It takes nothing: see Fail.
func (t *Throttle) Allowed(addr string) (time.Duration, bool) {
	if t == nil {
		return 0, true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.forgetIdle(now)
	el, ok := t.byAddr[addr]
	if !ok {
		return 0, true // never failed: a full bucket, not worth remembering
	}
	e := el.Value.(*throttleEntry)
	t.refill(e, now)
	if e.tokens < 1 {
		wait := time.Duration((1 - e.tokens) / t.rate * float64(time.Second))
		return max(wait, time.Second), false
	}
	return 0, true
}

// Fail counts one failed attempt of addr.
func (t *Throttle) Fail(addr string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	el, ok := t.byAddr[addr]
	if !ok {
		el = t.order.PushFront(&throttleEntry{addr: addr, tokens: t.burst, at: now})
		t.byAddr[addr] = el
		for t.order.Len() > t.max {
			t.remove(t.order.Back())
		}
	}
	e := el.Value.(*throttleEntry)
	t.refill(e, now)
	e.tokens = math.Max(e.tokens-1, -failBelowMax*t.burst)
	t.order.MoveToFront(el)
}

// Left reports how many attempts addr has now (for logs and tests).
func (t *Throttle) Left(addr string) int {
	if t == nil {
		return math.MaxInt
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.byAddr[addr]
	if !ok {
		return int(t.burst)
	}
	e := el.Value.(*throttleEntry)
	t.refill(e, t.now())
	return int(e.tokens)
}

// Len is the number of addresses remembered.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.order.Len()
}

// forgetIdle drops, from the least recently used end, addresses whose
// bucket is full again: remembering them changes nothing.
func (t *Throttle) forgetIdle(now time.Time) {
	for el := t.order.Back(); el != nil; el = t.order.Back() {
		if !t.refill(el.Value.(*throttleEntry), now) {
			return
		}
		t.remove(el)
	}
}

func (t *Throttle) remove(el *list.Element) {
	t.order.Remove(el)
	delete(t.byAddr, el.Value.(*throttleEntry).addr)
}

// ThrottledError says a client made too many failed attempts.
type ThrottledError struct {
	// RetryAfter is how long the client must wait.
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	secs := int(math.Ceil(e.RetryAfter.Seconds()))
	return fmt.Sprintf("too many failed logins from your address: try again in %d seconds (at %s)",
		secs, time.Now().Add(time.Duration(secs)*time.Second).UTC().Format("15:04:05 UTC"))
}

// SetRetryAfter sets the Retry-After header (whole seconds, rounded up).
func (e *ThrottledError) SetRetryAfter(h http.Header) {
	h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
}

// SetThrottle replaces the throttle on failed logins (tests use a small
// one). Call it before serving.
func (s *Server) SetThrottle(t *Throttle) {
	if s.tokens == nil {
		s.tokens = &Tokens{}
	}
	s.tokens.throttle = t
}

// SetTrustedProxies names the reverse proxies whose X-Forwarded-For header
// says who the client is (DAB_TRUSTED_PROXIES). Without any, the header is
// ignored: a client can write anything into it. Call it before serving.
func (s *Server) SetTrustedProxies(p []netip.Prefix) {
	if s.tokens == nil {
		s.tokens = &Tokens{}
	}
	s.tokens.trusted = append([]netip.Prefix(nil), p...)
}

// ClientAddr is the address failed logins are counted against: the
// connection's peer; when that peer is a trusted proxy, the nearest address
// in X-Forwarded-For that is not a trusted proxy (walking from the right,
// because each proxy appends the peer it saw and only the entries added by
// trusted proxies can be believed). IPv6 clients are counted by /64, the
// block one host usually controls.
func (s *Server) ClientAddr(r *http.Request) string {
	var trusted []netip.Prefix
	if s.tokens != nil {
		trusted = s.tokens.trusted
	}
	return throttleKey(clientIP(r, trusted))
}

func clientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := parseIP(r.RemoteAddr)
	if !peer.IsValid() || !isTrusted(peer, trusted) {
		return peer
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		ip := parseIP(strings.TrimSpace(hops[i]))
		if !ip.IsValid() {
			// A trusted proxy wrote something unreadable: the last
			// believable hop is the client.
			return client
		}
		client = ip
		if !isTrusted(ip, trusted) {
			return ip
		}
	}
	return client
}

func isTrusted(ip netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// parseIP reads "ip", "ip:port" or "[ip]:port".
func parseIP(s string) netip.Addr {
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	ip, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap().WithZone("")
}

func throttleKey(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "unknown"
	case ip.Is4():
		return ip.String()
	default:
		p, _ := ip.Prefix(64)
		return p.String()
	}
}
