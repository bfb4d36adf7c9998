package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/redisbatch"
)

// ErrNotReplicated: a ledger write was applied on the Redis master, but
// fewer than Options.MinReplicas replicas acknowledged it within
// Options.ReplicaTimeout. The write is not undone, and it does not count
// as done: repeating the same request (the same grant key, purchase ID or
// offer) is safe, returns the stored result and waits again.
var ErrNotReplicated = errors.New("not_replicated")

// Bounds of Options.
const (
	// MinReplicasMax is the most replicas a write may wait for.
	MinReplicasMax = 16
	// ReplicaTimeoutDefault bounds the wait for replicas: a replica on the
	// same network acknowledges within milliseconds.
	ReplicaTimeoutDefault = time.Second
	// ReplicaTimeoutMin and ReplicaTimeoutMax bound Options.ReplicaTimeout:
	// WAIT counts whole milliseconds, and WAIT 0 would block forever.
	ReplicaTimeoutMin = time.Millisecond
	ReplicaTimeoutMax = time.Minute
)

// Options are a Store's optional settings; the zero value is what New uses.
type Options struct {
	// MinReplicas is how many Redis replicas must acknowledge every ledger
	// write (grants, purchases, prices and listings) before it counts as
	// done: Redis's WAIT, on the connection that wrote. 0 (the default)
	// waits for none. Accepting a purchase as pending and RebuildSales
	// do not wait: they move no credits.
	MinReplicas int
	// ReplicaTimeout bounds each wait. Default ReplicaTimeoutDefault.
	ReplicaTimeout time.Duration
	// Events trims the events stream that grants, purchases, prices and
	// listings append to (default: event.MaxLenDefault entries).
	Events event.Trim
}

func (o Options) validate() error {
	if o.MinReplicas < 0 || o.MinReplicas > MinReplicasMax {
		return fmt.Errorf("%w: MinReplicas %d: use 0 to %d", ErrInvalid, o.MinReplicas, MinReplicasMax)
	}
	if o.ReplicaTimeout != 0 && (o.ReplicaTimeout < ReplicaTimeoutMin || o.ReplicaTimeout > ReplicaTimeoutMax) {
		return fmt.Errorf("%w: ReplicaTimeout %s: use %s to %s", ErrInvalid, o.ReplicaTimeout, ReplicaTimeoutMin, ReplicaTimeoutMax)
	}
	return nil
}

// NewWithOptions is New with options. It panics on options out of their
// bounds (a configuration bug: internal/config validates them first).
func NewWithOptions(rdb redis.UniversalClient, prefix, house string, o Options) *Store {
	if err := o.validate(); err != nil {
		panic("ledger: " + err.Error())
	}
	if o.ReplicaTimeout == 0 {
		o.ReplicaTimeout = ReplicaTimeoutDefault
	}
	s := New(rdb, prefix, house)
	s.opts = o
	return s
}

// fieldUnreplicated marks a purchase hash whose result may not have
// reached the replicas yet; GetPurchase reports such a purchase as
// pending. Apply sets it before the purchase script runs (only while the
// purchase is not finished) and removes it after WAIT succeeded, then
// waits again, so that a purchase task completes only when the removal
// too is on the replicas. The purchase script never reads nor writes it.
const fieldUnreplicated = "unreplicated"

// markUnreplicatedLua marks a purchase that is not finished yet.
//
// KEYS[1] purchase hash
// ARGV[1] params ("asset|buyer|credits")
//
// Returns 1 when it marked, 0 when the purchase is finished already or the
// ID is another purchase's (the purchase script reports the conflict).
const markUnreplicatedLua = `
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'succeeded' or status == 'rejected' then
  return 0
end
local params = redis.call('HGET', KEYS[1], 'params')
if params and params ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'unreplicated', '1')
return 1
`

var markUnreplicated = redis.NewScript(markUnreplicatedLua)

// replicated reports whether writes wait for replicas.
func (s *Store) replicated() bool { return s.opts.MinReplicas > 0 }

// master returns one connection to the master that holds the ledger's keys
// (they share one hash tag, so one Cluster slot). WAIT counts the writes
// of its own connection only: sent through the pool it would wait for a
// connection that wrote nothing and answer at once. On a Cluster,
// ClusterClient.Wait is no better: go-redis routes the keyless WAIT by the
// server's command tips, to every master on pooled connections, keeping
// the smallest answer (to one master when the server gives no tips). So
// the WAIT goes on one connection to the master of the ledger's slot. A
// slot that moved meanwhile answers MOVED: an error, and the request is
// retried. The caller closes the connection.
func (s *Store) master(ctx context.Context) (*redis.Conn, error) {
	switch c := redisbatch.Unwrap(s.rdb).(type) {
	case *redis.Client: // a single Redis, or Sentinel's current master
		return c.Conn(), nil
	case *redis.ClusterClient:
		node, err := c.MasterForKey(ctx, s.keys.Balances())
		if err != nil {
			return nil, fmt.Errorf("ledger: find the master of the ledger's slot: %w", err)
		}
		return node.Conn(), nil
	default:
		return nil, fmt.Errorf("ledger: waiting for replicas needs a single, Sentinel or Cluster client, not %T", c)
	}
}

// ReplicaProbe is a counter that every wait for replicas increments
// first. WAIT waits for the replicas to reach the offset of its
// connection's last write; a repeated request (a grant key used before, an
// offer already so) writes nothing, and the first write it repeats may
// have been made on another connection and never have reached the
// replicas. The probe moves the connection's offset to the master's
// present one, which covers every write made before, on any connection.
func (k Keys) ReplicaProbe() string { return k.base() + "replica_probe" }

// wait runs WAIT on conn: ErrNotReplicated when fewer than MinReplicas
// replicas acknowledged everything written to the master so far within
// ReplicaTimeout.
func (s *Store) wait(ctx context.Context, conn *redis.Conn, what string) error {
	if err := conn.Incr(ctx, s.keys.ReplicaProbe()).Err(); err != nil {
		return fmt.Errorf("ledger: %s: wait for replicas: %w", what, err)
	}
	// Wait sets the read deadline to the timeout itself.
	n, err := conn.Wait(ctx, s.opts.MinReplicas, s.opts.ReplicaTimeout).Result()
	if err != nil {
		return fmt.Errorf("ledger: %s: wait for replicas: %w", what, err)
	}
	if n < int64(s.opts.MinReplicas) {
		return fmt.Errorf("%w: %s is applied on the Redis master, but %d of the %d replicas required (DAB_REDIS_MIN_REPLICAS) acknowledged it within %s; the same request again is safe",
			ErrNotReplicated, what, n, s.opts.MinReplicas, s.opts.ReplicaTimeout)
	}
	return nil
}

// write runs fn against Redis; with MinReplicas set, on one connection to
// the ledger's master, and then waits for the replicas.
func (s *Store) write(ctx context.Context, what string, fn func(redis.Scripter) error) error {
	if !s.replicated() {
		return fn(s.rdb)
	}
	conn, err := s.master(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := fn(conn); err != nil {
		return err
	}
	return s.wait(ctx, conn, what)
}

// applyReplicated is Apply with MinReplicas set: mark, apply, wait, unmark,
// wait.
func (s *Store) applyReplicated(ctx context.Context, p PurchaseRequest) (PurchaseResult, error) {
	conn, err := s.master(ctx)
	if err != nil {
		return PurchaseResult{}, err
	}
	defer conn.Close()
	key := s.keys.Purchase(p.PurchaseID)
	if err := markUnreplicated.Run(ctx, conn, []string{key}, p.params()).Err(); err != nil {
		return PurchaseResult{}, fmt.Errorf("ledger: purchase %s: %w", p.PurchaseID, err)
	}
	r, err := s.apply(ctx, conn, p)
	if err != nil {
		return PurchaseResult{}, err
	}
	what := "purchase " + p.PurchaseID
	if err := s.wait(ctx, conn, what); err != nil {
		return PurchaseResult{}, err
	}
	if err := conn.HDel(ctx, key, fieldUnreplicated).Err(); err != nil {
		return PurchaseResult{}, fmt.Errorf("ledger: purchase %s: %w", p.PurchaseID, err)
	}
	if err := s.wait(ctx, conn, what); err != nil {
		return PurchaseResult{}, err
	}
	return r, nil
}

// WaitReplicas waits until MinReplicas replicas have everything written to
// the bank's master so far, on any connection: asset records share the
// ledger's hash tag (one master, one replication stream), so the upload
// handler calls it after recording an asset and before deleting the spool
// entry, which stays the durable copy until then. ErrNotReplicated when
// too few replicas acknowledged within ReplicaTimeout; nil at once when
// MinReplicas is 0.
func (s *Store) WaitReplicas(ctx context.Context, what string) error {
	if !s.replicated() {
		return nil
	}
	conn, err := s.master(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return s.wait(ctx, conn, what)
}
