package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// SessionCookie is the name of the console's session cookie.
const SessionCookie = "dab_session"

// Sessions keeps console logins in Redis: the browser holds a random ID in
// an HttpOnly, SameSite=Strict cookie; the token itself never leaves the
// login request.
type Sessions struct {
	rdb    redis.UniversalClient
	prefix string
	TTL    time.Duration
}

// NewSessions returns a store under prefix + "{web}:session:".
func NewSessions(rdb redis.UniversalClient, prefix string) *Sessions {
	return &Sessions{rdb: rdb, prefix: prefix + "{web}:session:", TTL: 12 * time.Hour}
}

// Create starts a session for c and returns its ID.
func (s *Sessions) Create(ctx context.Context, c Caller) (string, error) {
	b := make([]byte, 32)
	rand.Read(b)
	id := hex.EncodeToString(b)
	var scopes []string
	for sc := range c.Scopes {
		scopes = append(scopes, sc)
	}
	sort.Strings(scopes)
	key := s.prefix + id
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, key, "name", c.Name, "scopes", strings.Join(scopes, ","))
	pipe.Expire(ctx, key, s.TTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return "", fmt.Errorf("session: %w", err)
	}
	return id, nil
}

// Get returns the caller of a session.
func (s *Sessions) Get(ctx context.Context, id string) (Caller, bool) {
	if len(id) != 64 {
		return Caller{}, false
	}
	m, err := s.rdb.HGetAll(ctx, s.prefix+id).Result()
	if err != nil || len(m) == 0 {
		return Caller{}, false
	}
	c := Caller{Name: m["name"], Scopes: map[string]bool{}, Session: true}
	for _, sc := range strings.Split(m["scopes"], ",") {
		if sc != "" {
			c.Scopes[sc] = true
		}
	}
	return c, true
}

// Delete ends a session.
func (s *Sessions) Delete(ctx context.Context, id string) {
	if len(id) == 64 {
		s.rdb.Del(ctx, s.prefix+id)
	}
}

// SetSessions lets requests authenticate with a console session cookie as
// well as a bearer token.
func (s *Server) SetSessions(ss *Sessions) { s.sessions = ss }

// Authenticate checks a token as the login form does.
func (s *Server) Authenticate(token string) (Caller, bool) {
	if s.open {
		return Caller{Name: "anyone (--insecure)", Scopes: map[string]bool{ScopeAdmin: true}}, true
	}
	e, ok := s.tokens.lookup(token)
	if !ok {
		return Caller{}, false
	}
	return Caller{Name: e.name, Scopes: e.scopes}, true
}

// caller finds who made a request: bearer token first, then session cookie.
func (s *Server) caller(r *http.Request) (Caller, bool, bool) {
	if tok, ok := bearer(r); ok {
		c, ok := s.Authenticate(tok)
		return c, ok, true
	}
	if s.sessions != nil {
		if ck, err := r.Cookie(SessionCookie); err == nil {
			c, ok := s.sessions.Get(r.Context(), ck.Value)
			return c, ok, ok
		}
	}
	if s.open {
		c, ok := s.Authenticate("")
		return c, ok, true
	}
	return Caller{}, false, false
}

// Optional passes a request on with its caller in the context when it has
// one, and without when not (pages that show a login link).
func (s *Server) Optional(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok, _ := s.caller(r); ok {
			r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, c))
		}
		h.ServeHTTP(w, r)
	})
}
