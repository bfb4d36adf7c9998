// Package redisbatch sends the Redis commands that goroutines give it at
// about the same time in one pipeline: one write and one read for all of
// them, where each alone costs a write, a read and a wake-up on both sides.
// A worker running DAB_CONCURRENCY uploads or purchases at once records
// each with a script of its own; on a machine where a system call is dear,
// those round trips were a fifth of the worker's system calls and a share
// of Redis's CPU.
//
// It adds no wait: a command given while no batch is on its way is sent at
// once, alone; one given while a batch is on its way goes in the next,
// sent as soon as that one is answered, with every other command given
// meanwhile (the group commit of databases).
package redisbatch

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Batcher sends commands in batches (see the package comment). It is a
// redis.Scripter, so that a script runs through it with
// (*redis.Script).Run; every other command goes through Do.
type Batcher struct {
	rdb redis.UniversalClient

	mu sync.Mutex
	// pending are the commands given and not yet taken into a batch.
	pending []*call
	// sending: a batch is on its way; the next is sent by the caller
	// that sent it, or by the one it hands on to.
	sending bool
	// batches counts the batches sent (tests look at it).
	batches atomic.Int64
}

type call struct {
	cmd redis.Cmder
	// done is closed once cmd has its answer.
	done chan struct{}
	// lead is closed when this call is to send the next batch.
	lead chan struct{}
}

// New returns a Batcher that sends through rdb.
func New(rdb redis.UniversalClient) *Batcher { return &Batcher{rdb: rdb} }

// Do sends cmd, in a batch with the commands given meanwhile, and returns
// its error (cmd holds the answer). A caller whose context ends while its
// command waits for a batch leaves with the context's error, its command
// unsent; one whose command is on its way waits for the answer, as for any
// command (go-redis's timeouts bound it). A batch is sent with the context
// of the caller that sends it, without its cancellation: one caller giving
// up does not fail the others' commands.
//
// go-redis sends a whole pipeline again when its first command meets a
// retryable error (LOADING, READONLY, ...): batch only commands that may
// run twice, as dab's record and purchase scripts and task results may.
func (b *Batcher) Do(ctx context.Context, cmd redis.Cmder) error {
	if err := ctx.Err(); err != nil {
		return err // as go-redis does: nothing is sent
	}
	c := &call{cmd: cmd, done: make(chan struct{}), lead: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	if !b.sending {
		b.sending = true
		b.mu.Unlock()
		b.send(ctx)
		return cmd.Err()
	}
	b.mu.Unlock()
	select {
	case <-c.done:
	case <-c.lead:
		b.send(ctx) // takes c with the others waiting
	case <-ctx.Done():
		if b.leave(c) {
			return ctx.Err()
		}
		select {
		case <-c.done: // taken into a batch on its way
		case <-c.lead:
			b.send(ctx) // made the sender meanwhile: the others wait for it
		}
	}
	return cmd.Err()
}

// leave takes c out of the pending commands; false: it is not there any
// more (taken into a batch, or made the next sender, which must send).
func (b *Batcher) leave(c *call) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-c.lead:
		return false
	default:
	}
	for i, p := range b.pending {
		if p == c {
			b.pending = append(b.pending[:i], b.pending[i+1:]...)
			return true
		}
	}
	return false
}

// send sends every pending command in one batch, then hands the sending on
// to a command that came meanwhile, if any: also when go-redis panics, so
// that the callers waiting are answered (with the panic as their error) and
// the next batch still goes; the panic then goes on up the sender's stack.
func (b *Batcher) send(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	b.mu.Lock()
	batch := b.pending
	b.pending = nil
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
		if len(b.pending) > 0 {
			close(b.pending[0].lead)
		} else {
			b.sending = false
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
