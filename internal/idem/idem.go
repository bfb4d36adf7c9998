// Package idem stores the first answer to a request made with an
// Idempotency-Key, so a retried request gets the same answer (Stripe's
// semantics: same key and same parameters return the first result; same key
// and different parameters is a conflict).
package idem

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrConflict means the key was used before with different parameters.
var ErrConflict = errors.New("idempotency key reused with different parameters")

// ErrBadKey means the key is empty, too long or not printable ASCII.
var ErrBadKey = errors.New("bad idempotency key")

// TTL is how long a key is remembered.
const TTL = 24 * time.Hour

// Store keeps keys in Redis under prefix + "{idem}:".
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	claim  *redis.Script
}

// New returns a Store.
func New(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix, claim: redis.NewScript(claimLua)}
}

// claimLua records a key's fingerprint and answer unless the key exists.
//
// KEYS[1] the key's hash
// ARGV[1] fingerprint of the request's parameters
// ARGV[2] the answer (JSON) to store
// ARGV[3] TTL in seconds
//
// Returns {1} when stored (first use), or {0, fingerprint, answer} of the
// earlier use.
const claimLua = `
local fp = redis.call('HGET', KEYS[1], 'fp')
if fp then
  return {0, fp, redis.call('HGET', KEYS[1], 'answer')}
end
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'answer', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1}
`

// CheckKey validates a key from a request header.
func CheckKey(key string) error {
	if key == "" || len(key) > 255 {
		return fmt.Errorf("%w: Idempotency-Key must have 1 to 255 characters", ErrBadKey)
	}
	for _, r := range key {
		if r < 0x21 || r > 0x7e {
			return fmt.Errorf("%w: Idempotency-Key may hold printable ASCII only", ErrBadKey)
		}
	}
	return nil
}

func (s *Store) key(scope, key string) string { return s.prefix + "{idem}:" + scope + ":" + key }

// Claim records answer for key unless the key was used before. It returns
// fresh=true for the first use; for a repeat with the same fingerprint it
// returns the stored answer; for a different fingerprint ErrConflict.
func (s *Store) Claim(ctx context.Context, scope, key, fingerprint string, answer []byte) (stored []byte, fresh bool, err error) {
	res, err := s.claim.Run(ctx, s.rdb, []string{s.key(scope, key)}, fingerprint, answer, int64(TTL/time.Second)).Slice()
	if err != nil {
		return nil, false, fmt.Errorf("idempotency key: %w", err)
	}
	if n, _ := res[0].(int64); n == 1 {
		return nil, true, nil
	}
	if fp, _ := res[1].(string); fp != fingerprint {
		return nil, false, ErrConflict
	}
	a, _ := res[2].(string)
	return []byte(a), false, nil
}

// Release forgets a key whose first request failed, so a retry can succeed.
func (s *Store) Release(ctx context.Context, scope, key string) error {
	return s.rdb.Del(ctx, s.key(scope, key)).Err()
}
