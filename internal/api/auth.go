package api

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/dab-assets/dab/internal/ledger"
)

var knownScopes = map[string]bool{ScopeIngest: true, ScopeRead: true, ScopePurchase: true, ScopeBroker: true, ScopeAdmin: true}

// Tokens holds the accepted bearer tokens and their scopes. Tokens are kept
// as SHA-256 digests and compared in constant time. The throttle on failed
// attempts lives here, beside what it protects: every check of a presented
// token (console login, bearer header) goes through the token set.
type Tokens struct {
	entries []tokenEntry

	once     sync.Once
	throttle *Throttle
	// trusted are the proxies whose X-Forwarded-For names the client.
	trusted []netip.Prefix
}

type tokenEntry struct {
	digest [32]byte
	scopes map[string]bool
	// account is the one account a bound token acts as ("" unbound).
	account string
	name    string // for logs: "admin" or "tokens file line N"
}

// LoadTokens builds the token set from the admin token (may be empty) and a
// tokens file (may be empty): one "scope[,scope][@account] token" per line,
// '#' starts a comment. A token bound to an account ("read,purchase@alice")
// acts as that account only.
func LoadTokens(adminToken, file string) (*Tokens, error) {
	t := &Tokens{}
	if adminToken != "" {
		if err := checkToken(adminToken); err != nil {
			return nil, fmt.Errorf("DAB_ADMIN_TOKEN: %w", err)
		}
		t.add(adminToken, []string{ScopeAdmin}, "", "admin token")
	}
	if file == "" {
		return t, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("DAB_TOKENS_FILE: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("DAB_TOKENS_FILE %s line %d: want \"scope[,scope][@account] token\"", file, n)
		}
		scopes, account, err := parseGrant(fields[0])
		if err != nil {
			return nil, fmt.Errorf("DAB_TOKENS_FILE %s line %d: %w", file, n, err)
		}
		if err := checkToken(fields[1]); err != nil {
			return nil, fmt.Errorf("DAB_TOKENS_FILE %s line %d: %w", file, n, err)
		}
		t.add(fields[1], scopes, account, fmt.Sprintf("tokens file line %d", n))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("DAB_TOKENS_FILE: %w", err)
	}
	return t, nil
}

// parseGrant reads the "scope[,scope][@account]" part of a tokens file
// line. Buying spends an account's credits, so a purchase token must be
// bound to the account it spends for; a system that buys for its users
// is a broker.
func parseGrant(grant string) ([]string, string, error) {
	list, account, bound := strings.Cut(grant, "@")
	if bound {
		if err := checkAccount(account); err != nil {
			return nil, "", err
		}
	}
	scopes := strings.Split(list, ",")
	for _, s := range scopes {
		if !knownScopes[s] {
			return nil, "", fmt.Errorf("unknown scope %q (use ingest, read, purchase, broker, admin)", s)
		}
		switch {
		case bound && (s == ScopeAdmin || s == ScopeBroker):
			return nil, "", fmt.Errorf("scope %s acts for every account and cannot be bound to %q: drop \"@%s\" or the scope", s, account, account)
		case !bound && s == ScopePurchase:
			return nil, "", fmt.Errorf("a purchase token spends an account's credits, so it must be bound to that account (%s@alice TOKEN); a system that buys for its users needs the broker scope instead (broker TOKEN)", list)
		}
	}
	return scopes, account, nil
}

// checkAccount checks an account name in a tokens file with the ledger's
// own rule, so a token can never be bound to an account the ledger would
// refuse.
func checkAccount(account string) error {
	if err := ledger.CheckAccount(account); err != nil {
		return fmt.Errorf("bound account: %w", err)
	}
	return nil
}

func checkToken(tok string) error {
	if len(tok) < 16 {
		return fmt.Errorf("a token must have at least 16 characters (this one has %d): generate one with `openssl rand -hex 24`", len(tok))
	}
	return nil
}

func (t *Tokens) add(tok string, scopes []string, account, name string) {
	e := tokenEntry{digest: sha256.Sum256([]byte(tok)), scopes: map[string]bool{}, account: account, name: name}
	for _, s := range scopes {
		e.scopes[s] = true
	}
	t.entries = append(t.entries, e)
}

// Empty reports whether no token is configured.
func (t *Tokens) Empty() bool { return t == nil || len(t.entries) == 0 }

// lookup finds the token's entry.
func (t *Tokens) lookup(tok string) (tokenEntry, bool) {
	return t.byDigest(sha256.Sum256([]byte(tok)))
}

// byDigest finds the entry of the token with SHA-256 d. Every entry is
// compared, in constant time, so timing tells nothing about which token (or
// how much of one) matched.
func (t *Tokens) byDigest(d [32]byte) (tokenEntry, bool) {
	var found tokenEntry
	ok := 0
	if t == nil {
		return found, false
	}
	for _, e := range t.entries {
		if subtle.ConstantTimeCompare(d[:], e.digest[:]) == 1 {
			found, ok = e, 1
		}
	}
	return found, ok == 1
}

// guard is the throttle on failed attempts (nil, which allows everything,
// only when no token set exists: then no token can succeed anyway).
func (t *Tokens) guard() *Throttle {
	if t == nil {
		return nil
	}
	t.once.Do(func() {
		if t.throttle == nil {
			t.throttle = NewThrottle(LoginFailuresPerMinuteDefault, ThrottleAddressesMax)
		}
	})
	return t.throttle
}

// scopeList is a scope set as one sorted, comma-separated string.
func scopeList(scopes map[string]bool) string {
	var out []string
	for sc, on := range scopes {
		if on {
			out = append(out, sc)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

type ctxKey struct{}

// Caller is who made a request.
type Caller struct {
	Name   string
	Scopes map[string]bool
	// Account is the account a bound token ("scope@account token") acts
	// as, and only as; empty for unbound tokens (admin, broker, ingest,
	// read).
	Account string
	// Session is true for a console login (cookie) rather than a bearer token.
	Session bool
	// token is the SHA-256 of the token the caller proved (zero in
	// --insecure mode). A session keeps it, never the token, to check on
	// every request that the token is still configured with the same scopes.
	token [32]byte
}

// CallerOf returns the authenticated caller of a request, if any.
func CallerOf(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(ctxKey{}).(Caller)
	return c, ok
}

// Errors of the market rules callers branch on.
var (
	// ErrWrongBuyer: a bound token named a buyer other than its account.
	ErrWrongBuyer = errors.New("wrong_buyer")
	// ErrBuyerRequired: an unbound token (broker, admin) named no buyer.
	ErrBuyerRequired = errors.New("buyer_required")
	// ErrNotPermitted: the caller may not act for any buyer.
	ErrNotPermitted = errors.New("not_permitted")
)

// Buyer says for whom a purchase by this caller is made. A bound token
// buys as its account only (requested may be empty or must be that
// account); a broker or admin must name the buyer; anyone else may not buy.
func (c Caller) Buyer(requested string) (string, error) {
	switch {
	case c.Account != "":
		if requested != "" && requested != c.Account {
			return "", fmt.Errorf("%w: this token buys as %q only; leave buyer_id out or use a broker token to buy for others", ErrWrongBuyer, c.Account)
		}
		return c.Account, nil
	case c.Scopes[ScopeAdmin] || c.Scopes[ScopeBroker]:
		if requested == "" {
			return "", fmt.Errorf("%w: name the buyer_id this purchase is for", ErrBuyerRequired)
		}
		return requested, nil
	}
	return "", fmt.Errorf("%w: buying needs a token bound to an account (purchase@alice) or a broker token", ErrNotPermitted)
}

// ActsFor reports whether the caller may act as account: admin always, a
// bound token for its own account only.
func (c Caller) ActsFor(account string) bool {
	return c.Scopes[ScopeAdmin] || (c.Account != "" && c.Account == account)
}

// Has reports whether the caller may act in scope; a scope "a,b" is
// satisfied by either.
func (c Caller) Has(scope string) bool {
	if c.Scopes[ScopeAdmin] {
		return true
	}
	for _, s := range strings.Split(scope, ",") {
		if c.Scopes[s] {
			return true
		}
	}
	return false
}

// require lets a request through when its bearer token carries scope:
// 401 without a valid token, 403 with one that lacks the scope.
//
// A client address that has failed too often gets 429 with Retry-After
// before its token is even looked at: otherwise the throttled attempts
// would still tell a guesser which token is right.
func (s *Server) require(scope string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok, tried, err := s.caller(r)
		var throttled *ThrottledError
		if errors.As(err, &throttled) {
			throttled.SetRetryAfter(w.Header())
			s.deny(w, r, http.StatusTooManyRequests, "throttled", throttled.Error())
			return
		}
		if errors.Is(err, ErrSessionsUnavailable) {
			s.deny(w, r, http.StatusServiceUnavailable, "sessions_unavailable", ErrSessionsUnavailable.Error())
			return
		}
		if !tried {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dab"`)
			s.deny(w, r, http.StatusUnauthorized, "unauthorized", "send a token: Authorization: Bearer <token> (scope "+scope+" or admin)")
			return
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dab", error="invalid_token"`)
			s.deny(w, r, http.StatusUnauthorized, "unauthorized", "the token is not valid")
			return
		}
		if !c.Has(scope) {
			s.deny(w, r, http.StatusForbidden, "forbidden", "this token lacks the scope "+scope)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, c)))
	})
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

func mustURL(path string) *url.URL {
	u, err := url.Parse(path)
	if err != nil {
		return &url.URL{Path: "/"}
	}
	return u
}
