package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// SessionCookie is the name of the console's session cookie.
const SessionCookie = "dab_session"

// SessionTTLDefault is how long a console login lasts at most.
const SessionTTLDefault = 12 * time.Hour

// ErrInvalidToken is returned by Authenticate for a token that is not configured.
var ErrInvalidToken = errors.New("that token is not valid")

// Sessions keeps console logins in Redis: the browser holds a random ID in
// an HttpOnly, SameSite=Strict cookie; the token itself never leaves the
// login request. A session holds the SHA-256 of its token (never the
// token) and the token's scopes at login, and ends as soon as the server's
// token set no longer has that token with those scopes: revoking a token
// (and restarting dab, which reads DAB_TOKENS_FILE at start) ends its
// sessions too.
type Sessions struct {
	rdb    redis.UniversalClient
	prefix string
	TTL    time.Duration
}

// NewSessions returns a store under prefix + "{web}:session:".
func NewSessions(rdb redis.UniversalClient, prefix string) *Sessions {
	return &Sessions{rdb: rdb, prefix: prefix + "{web}:session:", TTL: SessionTTLDefault}
}

// Session hash fields.
const (
	sessionName   = "name"
	sessionScopes = "scopes"
	// sessionToken is the hex SHA-256 of the token that logged in.
	sessionToken = "token_sha256"
	// sessionAccount is the account the token was bound to at login.
	sessionAccount = "account"
)

// Create starts a session for c and returns its ID.
func (s *Sessions) Create(ctx context.Context, c Caller) (string, error) {
	b := make([]byte, 32)
	rand.Read(b)
	id := hex.EncodeToString(b)
	digest := ""
	if c.token != ([32]byte{}) {
		digest = hex.EncodeToString(c.token[:])
	}
	key := s.prefix + id
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, key, sessionName, c.Name, sessionScopes, scopeList(c.Scopes), sessionToken, digest, sessionAccount, c.Account)
	pipe.Expire(ctx, key, s.TTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return "", fmt.Errorf("session: %w", err)
	}
	return id, nil
}

// Get returns the caller a session was started for, as stored: who it is
// now is for the server to decide (Server.caller checks the token).
// It returns ErrSessionsUnavailable when Redis does not answer: the
// session may well exist, and a login page would not help.
func (s *Sessions) Get(ctx context.Context, id string) (Caller, bool, error) {
	if len(id) != 64 {
		return Caller{}, false, nil
	}
	m, err := s.rdb.HGetAll(ctx, s.prefix+id).Result()
	if err != nil {
		return Caller{}, false, fmt.Errorf("%w: %v", ErrSessionsUnavailable, err)
	}
	if len(m) == 0 {
		return Caller{}, false, nil
	}
	c := Caller{Name: m[sessionName], Scopes: map[string]bool{}, Account: m[sessionAccount], Session: true}
	for _, sc := range strings.Split(m[sessionScopes], ",") {
		if sc != "" {
			c.Scopes[sc] = true
		}
	}
	// A session without a readable digest (one started before sessions
	// kept it) cannot be checked: it is left zero and so refused.
	if d, err := hex.DecodeString(m[sessionToken]); err == nil && len(d) == len(c.token) {
		copy(c.token[:], d)
	}
	return c, true, nil
}

// ErrSessionsUnavailable: the session store (Redis) does not answer.
var ErrSessionsUnavailable = errors.New("Redis is down: dab cannot check your login session; the console works again by itself as soon as Redis answers (dab dev restarts its redis-server)")

// Delete ends a session.
func (s *Sessions) Delete(ctx context.Context, id string) {
	if len(id) == 64 {
		s.rdb.Del(ctx, s.prefix+id)
	}
}

// SetSessions lets requests authenticate with a console session cookie as
// well as a bearer token.
func (s *Server) SetSessions(ss *Sessions) { s.sessions = ss }

// Authenticate checks a token presented by the client of r, as the login
// form does: ErrInvalidToken when no such token is configured, a
// *ThrottledError (checked before the token is) when the client's address
// has failed too often. Only a failure counts against the address.
func (s *Server) Authenticate(r *http.Request, token string) (Caller, error) {
	if s.open {
		return s.check(token)
	}
	addr := s.ClientAddr(r)
	guard := s.tokens.guard()
	if wait, ok := guard.Allowed(addr); !ok {
		return Caller{}, &ThrottledError{RetryAfter: wait}
	}
	c, err := s.check(token)
	if err == nil {
		return c, nil
	}
	guard.Fail(addr)
	if guard.Left(addr) <= 0 {
		s.log.Warn("auth.throttled", "client", addr, "note", "this address has used up its failed logins: its next attempts get 429 until the throttle refills")
	}
	return Caller{}, err
}

// check looks a token up, without throttle.
func (s *Server) check(token string) (Caller, error) {
	if s.open {
		return Caller{Name: "anyone (--insecure)", Scopes: map[string]bool{ScopeAdmin: true}}, nil
	}
	e, ok := s.tokens.lookup(token)
	if !ok {
		return Caller{}, ErrInvalidToken
	}
	return Caller{Name: e.name, Scopes: e.scopes, Account: e.account, token: e.digest}, nil
}

// caller finds who made a request: bearer token first, then session
// cookie. tried says whether the request carried credentials at all (a
// cookie of an ended session counts as none, so pages send the browser to
// the login page).
//
// Its error is a *ThrottledError (too many failures from this client) or
// wraps ErrSessionsUnavailable (Redis does not answer); tried is true then.
func (s *Server) caller(r *http.Request) (c Caller, ok, tried bool, err error) {
	if tok, has := bearer(r); has {
		c, err := s.Authenticate(r, tok)
		var throttled *ThrottledError
		if errors.As(err, &throttled) {
			return Caller{}, false, true, throttled
		}
		return c, err == nil, true, nil
	}
	if s.sessions != nil {
		if ck, err := r.Cookie(SessionCookie); err == nil {
			c, ok, err := s.sessionCaller(r.Context(), ck.Value)
			return c, ok, ok || err != nil, err
		}
	}
	if s.open {
		c, err := s.check("")
		return c, err == nil, true, nil
	}
	return Caller{}, false, false, nil
}

// sessionCaller returns the caller of session id if its token is still
// configured with the scopes it had at login; otherwise the session is
// deleted. The token's name is a label (its line in the tokens file), so it
// is taken from the current token set, not compared.
func (s *Server) sessionCaller(ctx context.Context, id string) (Caller, bool, error) {
	stored, ok, err := s.sessions.Get(ctx, id)
	if err != nil || !ok {
		return Caller{}, false, err
	}
	if s.open {
		c, err := s.check("")
		c.Session = true
		return c, err == nil, nil
	}
	reason := ""
	cur, ok := s.tokens.byDigest(stored.token)
	switch {
	case stored.token == [32]byte{}:
		reason = "the session does not record its token"
	case !ok:
		reason = "its token is no longer configured"
	case scopeList(cur.scopes) != scopeList(stored.Scopes):
		reason = "its token's scopes changed from " + scopeList(stored.Scopes) + " to " + scopeList(cur.scopes)
	case cur.account != stored.Account:
		reason = "its token is now bound to account " + strconv.Quote(cur.account) + ", not " + strconv.Quote(stored.Account)
	}
	if reason != "" {
		s.sessions.Delete(ctx, id)
		s.log.Info("session.ended", "caller", stored.Name, "reason", reason)
		return Caller{}, false, nil
	}
	return Caller{Name: cur.name, Scopes: cur.scopes, Account: cur.account, Session: true, token: stored.token}, true, nil
}

// Optional passes a request on with its caller in the context when it has
// one, and without when not (pages that show a login link).
func (s *Server) Optional(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok, _, _ := s.caller(r); ok {
			r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, c))
		}
		h.ServeHTTP(w, r)
	})
}
