// Package redisbatch sends the Redis commands that goroutines give at
// about the same time in one pipeline: one write and one read for all of
// them, where each alone costs a write, a read and a wake-up on both sides.
// On a machine where a system call is dear, a round trip costs Redis more
// CPU than most scripts do (a PING about 30 µs on the development machine,
// dab's purchase script 26 µs more).
//
// A process wraps its client once (Wrap): the scripts that may run twice go
// through its one Batcher, dab's own (records, purchases, task results) and
// asynq's enqueue and completion; the rest go alone (see Client).
//
// It adds no wait: a command given while no batch is on its way is sent at
// once, alone; one given while a batch is on its way goes in the next,
// sent as soon as that one is answered, with every other command given
// meanwhile (the group commit of databases).
package redisbatch

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Batcher sends commands in batches (see the package comment). It is a
// redis.Scripter, so that a script runs through it with
// (*redis.Script).Run; every other command goes through Do.
//
// On a Cluster client each hash slot's commands have batches of their own
// (a lane per key's hash tag, or per key without one): go-redis answers a
// pipeline that spans nodes once every node has answered, so one batch
// holding a command for a node that is down would hold the others back for
// that node's timeouts.
type Batcher struct {
	rdb redis.UniversalClient
	// perSlot: give each hash tag a lane of its own (a Cluster client).
	perSlot bool

	mu    sync.Mutex
	lanes map[string]*lane
	// batches counts the batches sent (tests look at it).
	batches atomic.Int64
}

// lane is the commands of one batch sequence; guarded by Batcher.mu.
type lane struct {
	// pending are the commands given and not yet taken into a batch.
	pending []*call
	// sending: a batch is on its way; the next is sent by the caller
	// that sent it, or by the one it hands on to.
	sending bool
}

type call struct {
	cmd redis.Cmder
	// done is closed once cmd has its answer.
	done chan struct{}
	// lead is closed when this call is to send the next batch.
	lead chan struct{}
}

// New returns a Batcher that sends through rdb.
func New(rdb redis.UniversalClient) *Batcher {
	_, cluster := rdb.(*redis.ClusterClient)
	return &Batcher{rdb: rdb, perSlot: cluster, lanes: map[string]*lane{}}
}

// laneOf names cmd's lane: "" when all commands share one; on a Cluster
// the hash tag of its first key (the key itself without one; "" for a
// script without keys, which goes to any node). The first key is argument
// 3 of a script (eval, sha or text, number of keys, keys...), argument 1
// of every other command given here.
func (b *Batcher) laneOf(cmd redis.Cmder) string {
	if !b.perSlot {
		return ""
	}
	args := cmd.Args()
	if len(args) == 0 {
		return ""
	}
	pos := 1
	if name, _ := args[0].(string); strings.HasPrefix(strings.ToLower(name), "eval") {
		if len(args) < 3 {
			return ""
		}
		if n, _ := args[2].(int); n == 0 {
			return ""
		}
		pos = 3
	}
	if len(args) <= pos {
		return ""
	}
	key := fmt.Sprint(args[pos])
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// Do sends cmd, in a batch with the commands given meanwhile, and returns
// its error (cmd holds the answer). A caller whose context ends while its
// command waits for a batch leaves with the context's error, its command
// unsent; one whose command is on its way waits for the answer, as for any
// command (go-redis's timeouts bound it). A batch is sent with the context
// of the caller that sends it, without its cancellation: one caller giving
// up does not fail the others' commands.
//
// go-redis sends a whole pipeline again when its connection breaks after
// some of the answers came back, or when its first command meets a
// retryable error (LOADING, READONLY, ...): batch only commands that may
// run twice, as dab's record and purchase scripts and task results may
// (see Client).
func (b *Batcher) Do(ctx context.Context, cmd redis.Cmder) error {
	if err := ctx.Err(); err != nil {
		return err // as go-redis does: nothing is sent
	}
	c := &call{cmd: cmd, done: make(chan struct{}), lead: make(chan struct{})}
	name := b.laneOf(cmd)
	b.mu.Lock()
	l := b.lanes[name]
	if l == nil {
		l = &lane{}
		b.lanes[name] = l
	}
	l.pending = append(l.pending, c)
	if !l.sending {
		l.sending = true
		b.mu.Unlock()
		b.send(ctx, name, l)
		return cmd.Err()
	}
	b.mu.Unlock()
	select {
	case <-c.done:
	case <-c.lead:
		b.send(ctx, name, l) // takes c with the others waiting
	case <-ctx.Done():
		if b.leave(l, c) {
			return ctx.Err()
		}
		select {
		case <-c.done: // taken into a batch on its way
		case <-c.lead:
			b.send(ctx, name, l) // made the sender meanwhile: the others wait for it
		}
	}
	return cmd.Err()
}

// leave takes c out of l's pending commands; false: it is not there any
// more (taken into a batch, or made the next sender, which must send).
func (b *Batcher) leave(l *lane, c *call) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-c.lead:
		return false
	default:
	}
	for i, p := range l.pending {
		if p == c {
			l.pending = append(l.pending[:i], l.pending[i+1:]...)
			return true
		}
	}
	return false
}

// send sends every pending command of lane l in one batch, then hands the
// sending on to a command that came meanwhile, if any: also when go-redis
// panics, so that the callers waiting are answered (with the panic as
// their error) and the next batch still goes; the panic then goes on up
// the sender's stack. A lane with nothing left to send is dropped (a
// Cluster's keys without hash tags would otherwise each keep one).
func (b *Batcher) send(ctx context.Context, name string, l *lane) {
	ctx = context.WithoutCancel(ctx)
	b.mu.Lock()
	batch := l.pending
	l.pending = nil
	b.mu.Unlock()
	defer func() {
		r := recover()
		if r != nil {
			for _, c := range batch {
				c.cmd.SetErr(fmt.Errorf("redisbatch: the batch's sender panicked: %v", r))
			}
		}
		for _, c := range batch {
			close(c.done)
		}
		b.mu.Lock()
		if len(l.pending) > 0 {
			close(l.pending[0].lead)
		} else {
			l.sending = false
			delete(b.lanes, name)
		}
		b.mu.Unlock()
		if r != nil {
			panic(r)
		}
	}()
	b.batches.Add(1)
	if len(batch) == 1 {
		_ = b.rdb.Process(ctx, batch[0].cmd)
		return
	}
	pipe := b.rdb.Pipeline()
	for _, c := range batch {
		_ = pipe.Process(ctx, c.cmd)
	}
	_, _ = pipe.Exec(ctx) // each command has its own answer or error
	// go-redis looks at the first command's answer only for the errors on
	// which it sends a command again (READONLY while a replica is promoted,
	// LOADING, ...): a later command answered so was not run, and goes
	// again alone, as it would have had it been sent alone.
	for _, c := range batch[1:] {
		if refusedUnrun(c.cmd.Err()) {
			_ = b.rdb.Process(ctx, c.cmd)
		}
	}
}

// refusedUnrun: an answer with which Redis refused a command without
// running it, on which go-redis sends a lone command again.
func refusedUnrun(err error) bool {
	return redis.IsReadOnlyError(err) || redis.IsLoadingError(err) || redis.IsTryAgainError(err) ||
		redis.IsClusterDownError(err) || redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.IsNoReplicasError(err)
}

// evalCmd is the command go-redis's Eval family sends: name, the script or
// its hash, the number of keys, the keys, the arguments; its first key
// (position 3) names the Cluster slot. The arguments are sent as they are
// (go-redis's Eval flattens a lone slice or map argument; no caller here
// passes one).
func evalCmd(ctx context.Context, name, script string, keys []string, args []any) *redis.Cmd {
	a := make([]any, 0, 3+len(keys)+len(args))
	a = append(a, name, script, len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	cmd := redis.NewCmd(ctx, a...)
	if len(keys) > 0 {
		cmd.SetFirstKeyPos(3)
	}
	return cmd
}

func (b *Batcher) eval(ctx context.Context, name, script string, keys []string, args []any) *redis.Cmd {
	cmd := evalCmd(ctx, name, script, keys, args)
	_ = b.Do(ctx, cmd)
	return cmd
}

// Eval runs a script by its text, batched.
func (b *Batcher) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return b.eval(ctx, "eval", script, keys, args)
}

// EvalSha runs a loaded script by its hash, batched. A NOSCRIPT answer (a
// Redis that restarted or failed over) makes (*redis.Script).Run send the
// text with Eval.
func (b *Batcher) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return b.eval(ctx, "evalsha", sha1, keys, args)
}

// EvalRO is Eval for read-only scripts.
func (b *Batcher) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return b.eval(ctx, "eval_ro", script, keys, args)
}

// EvalShaRO is EvalSha for read-only scripts.
func (b *Batcher) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return b.eval(ctx, "evalsha_ro", sha1, keys, args)
}

// ScriptExists is the client's, not batched.
func (b *Batcher) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return b.rdb.ScriptExists(ctx, hashes...)
}

// ScriptLoad is the client's, not batched.
func (b *Batcher) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return b.rdb.ScriptLoad(ctx, script)
}

var _ redis.Scripter = (*Batcher)(nil)

// Client is a Redis client on which the scripts that may run twice go
// through one Batcher: asynq's enqueue and completion (asynqMayRepeat),
// and those a caller sends through Batcher() or Batch. Every other script
// and command goes alone, as it would. A process makes one and hands it
// to everything that talks to Redis, so that all of them share its
// batches.
//
// Only scripts that may run twice: go-redis sends a whole pipeline again
// when its connection breaks after some of the answers came back (a
// restart, a failover's CLIENT KILL), so a batched script whose answer was
// received runs again, and its caller gets the second run's answer. Sent
// alone, a script whose answer was received is never sent again. asynq's
// fetch run twice would leave a task active that nobody runs until its
// lease expires; an Idempotency-Key claim run twice would find its own
// claim: neither is batched.
type Client struct {
	redis.UniversalClient
	batch *Batcher
}

// Wrap returns rdb as a Client; a Client as it is, so that everything
// wrapping the client it was given shares that one's batches.
func Wrap(rdb redis.UniversalClient) *Client {
	if c, ok := rdb.(*Client); ok {
		return c
	}
	return &Client{UniversalClient: rdb, batch: New(rdb)}
}

// Unwrap returns the client under a Client (rdb itself otherwise), for the
// code that needs a *redis.Client or *redis.ClusterClient.
func Unwrap(rdb redis.UniversalClient) redis.UniversalClient {
	if c, ok := rdb.(*Client); ok {
		return c.UniversalClient
	}
	return rdb
}

// Batcher is the Client's Batcher, a redis.Scripter: a script that may run
// twice (a second run changes nothing and answers as the first did) runs
// in the Client's batches with script.Run(ctx, c.Batcher(), ...).
func (c *Client) Batcher() *Batcher { return c.batch }

// Batch sends cmd, which must be one that may run twice, in a batch, as
// Batcher.Do does.
func (c *Client) Batch(ctx context.Context, cmd redis.Cmder) error { return c.batch.Do(ctx, cmd) }

// asynqMayRepeat recognises, by their keys, the scripts of asynq v0.26
// that a second run leaves as the first did, and that every task runs:
//   - the enqueue (KEYS: the task's hash asynq:{queue}:t:<id>, the queue's
//     pending list), which does nothing when the task's hash exists (the
//     client then answers ErrTaskIDConflict, which dab takes for queued);
//   - the completions (done, mark as complete, requeue; KEYS[1]: the
//     queue's active list), which answer NOT FOUND without a change when
//     the task is not active any more (asynq logs it).
//
// The fetch (KEYS[1]: the pending list) pops a new task on each run and is
// never batched; nor is any other script of asynq's.
func asynqMayRepeat(keys []string) bool {
	if len(keys) == 0 || !strings.HasPrefix(keys[0], "asynq:{") {
		return false
	}
	if strings.HasSuffix(keys[0], "}:active") {
		return true
	}
	return len(keys) == 2 && strings.Contains(keys[0], "}:t:") && strings.HasSuffix(keys[1], "}:pending")
}

// Eval runs a script by its text; batched if it is asynq's enqueue or
// completion.
func (c *Client) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	if asynqMayRepeat(keys) {
		return c.batch.Eval(ctx, script, keys, args...)
	}
	return c.UniversalClient.Eval(ctx, script, keys, args...)
}

// EvalSha runs a loaded script by its hash; batched if it is asynq's
// enqueue or completion.
func (c *Client) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	if asynqMayRepeat(keys) {
		return c.batch.EvalSha(ctx, sha1, keys, args...)
	}
	return c.UniversalClient.EvalSha(ctx, sha1, keys, args...)
}

var _ redis.UniversalClient = (*Client)(nil)
