// Package redisbatch sends the Redis commands that goroutines give at
// about the same time in one pipeline: one write and one read for all of
// them, where each alone costs a write, a read and a wake-up on both sides.
// On a machine where a system call is dear, a round trip costs Redis more
// CPU than most scripts do (a PING about 30 µs on the development machine,
// dab's purchase script 26 µs more).
//
// A process wraps its client once (Wrap): every script it runs then goes
// through one Batcher, dab's own and asynq's (enqueue, fetch, completion),
// and task results are written in the same batches.
//
// It adds no wait: a command given while no batch is on its way is sent at
// once, alone; one given while a batch is on its way goes in the next,
// sent as soon as that one is answered, with every other command given
// meanwhile (the group commit of databases).
package redisbatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
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
	// pipe sends the batches of more than one command: a client like rdb
	// that never sends a command again (nil: rdb is of a kind it cannot
	// copy, and every command goes alone). go-redis sends a whole pipeline
	// again when its connection breaks after some answers came back,
	// running the answered commands twice; send sends again, alone and
	// through rdb, only those left without an answer.
	pipe redis.UniversalClient
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

// New returns a Batcher that sends through rdb; Close closes the
// connections of its batches. Its batches go on a copy of rdb that never
// sends a command again; a Sentinel client cannot be copied
// (the copy would not drop its connections to a master that failed over),
// and its commands go alone: NewWithPipe takes the copy from who made rdb.
func New(rdb redis.UniversalClient) *Batcher {
	return NewWithPipe(rdb, copyNoRetries(rdb))
}

// NewWithPipe returns a Batcher that sends through rdb, and its batches of
// more than one command through pipe, a client to the same Redis that
// never sends a command again (MaxRetries -1; MaxRedirects -1 on a
// Cluster); nil: every command goes alone. Close closes pipe.
func NewWithPipe(rdb, pipe redis.UniversalClient) *Batcher {
	_, cluster := rdb.(*redis.ClusterClient)
	return &Batcher{rdb: rdb, pipe: pipe, perSlot: cluster, lanes: map[string]*lane{}}
}

// copyNoRetries returns a client with rdb's settings that never sends a
// command or pipeline again, and follows no MOVED or ASK, with a pool of
// its own; nil for a Sentinel client or a kind of client it cannot copy.
func copyNoRetries(rdb redis.UniversalClient) redis.UniversalClient {
	switch c := rdb.(type) {
	case *redis.Client:
		o := *c.Options()
		if o.Addr == "FailoverClient" { // go-redis's mark of a Sentinel client
			return nil
		}
		o.MaxRetries = -1
		o.ReadTimeout, o.WriteTimeout = unnormalized(o.ReadTimeout), unnormalized(o.WriteTimeout)
		// go-redis changes the maintenance-notification settings of a
		// client while it connects, and gives it a push processor of its
		// own: the copy has neither (Redis Enterprise's notifications are
		// the original's business).
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		o.PushNotificationProcessor = nil
		return redis.NewClient(&o)
	case *redis.ClusterClient:
		o := *c.Options()
		o.MaxRetries = -1
		o.MaxRedirects = -1
		o.ReadTimeout, o.WriteTimeout = unnormalized(o.ReadTimeout), unnormalized(o.WriteTimeout)
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		return redis.NewClusterClient(&o)
	}
	return nil
}

// unnormalized gives back a timeout as it was before go-redis's options
// took it (Options hold 0 for "none" and -1 for "no deadline set", which a
// new client would read as "the default" and "none").
func unnormalized(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return -1
	case d < 0:
		return -2
	}
	return d
}

// maxBatch bounds a batch: the commands given meanwhile past it wait for
// the next. A batch's answers share one read deadline (the client's
// ReadTimeout), as commands queued on Redis behind each other do.
const maxBatch = 64

// Close closes the connections the Batcher's batches go on (not rdb's).
func (b *Batcher) Close() error {
	if b.pipe == nil {
		return nil
	}
	return b.pipe.Close()
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
// A command runs as often as it would have alone: a batch goes on
// connections that never send it again, and a command left without an
// answer (or refused unrun, as READONLY) then goes alone, with go-redis's
// retries (see send).
func (b *Batcher) Do(ctx context.Context, cmd redis.Cmder) error {
	if err := ctx.Err(); err != nil {
		return err // as go-redis does: nothing is sent
	}
	if b.pipe == nil {
		return b.rdb.Process(ctx, cmd) // no batches: each goes alone, at once
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
	if len(batch) > maxBatch {
		batch, l.pending = batch[:maxBatch], append([]*call(nil), batch[maxBatch:]...)
	}
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
	pipe := b.pipe.Pipeline()
	for _, c := range batch {
		_ = pipe.Process(ctx, c.cmd)
	}
	_, _ = pipe.Exec(ctx) // each command has its own answer or error
	for _, c := range batch {
		switch state(c.cmd) {
		case answered:
		case answeredThenBroken:
			// go-redis gives every command of a broken pipeline the
			// pipeline's error, also those answered before the break.
			c.cmd.SetErr(nil)
		case unanswered:
			// As it would have gone, had it gone alone from the start:
			// with go-redis's retries, through rdb. An answered command
			// is never sent again.
			c.cmd.SetErr(nil)
			_ = b.rdb.Process(ctx, c.cmd)
		}
	}
}

// What a command of a batch got.
const (
	answered = iota
	// answeredThenBroken: a script's answer, and then the connection broke.
	answeredThenBroken
	// unanswered: no answer (the connection broke first, or none was
	// made), or Redis refused it without running it (READONLY while a
	// replica is promoted, LOADING, MOVED, ...), on which go-redis sends a
	// lone command again.
	unanswered
)

// state tells what cmd got. A Redis answer is one that is not an error, or
// a Redis error (also redis.Nil). A script answered with a value and then
// left with a connection's error was answered: its reply had been read (a
// script answering nil or an error keeps that answer). Any other command
// left with a connection's error is taken for unanswered: only commands
// that may run twice go through Batch.
func state(cmd redis.Cmder) int {
	err := cmd.Err()
	if err == nil {
		return answered
	}
	var reply redis.Error
	if !errors.As(err, &reply) {
		if script, ok := cmd.(*redis.Cmd); ok && script.Val() != nil {
			return answeredThenBroken
		}
		return unanswered
	}
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	if moved || ask || redis.IsReadOnlyError(err) || redis.IsLoadingError(err) || redis.IsTryAgainError(err) ||
		redis.IsClusterDownError(err) || redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.IsNoReplicasError(err) {
		return unanswered
	}
	return answered
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

// Client is a Redis client whose scripts (Eval, EvalSha and their
// read-only forms) go through one Batcher; every other command goes as it
// would. A process makes one and hands it to everything that talks to
// Redis: its own stores and asynq's server and client, whose enqueue,
// fetch and completion are scripts, sent alone by asynq, one round trip per
// task and step.
//
// Scripts may go in batches: none blocks, none depends on which connection
// it comes on (a Conn or Tx made from the client sends its own, unbatched),
// and a batched script runs exactly as often as it would alone (see
// Batcher.send).
type Client struct {
	redis.UniversalClient
	batch *Batcher
}

// Wrap returns rdb with its scripts batched; a Client as it is, so that
// everything wrapping the client it was given shares that one's batches.
func Wrap(rdb redis.UniversalClient) *Client {
	if c, ok := rdb.(*Client); ok {
		return c
	}
	return &Client{UniversalClient: rdb, batch: New(rdb)}
}

// WrapWithPipe is Wrap with the batches of more than one command sent
// through pipe (NewWithPipe).
func WrapWithPipe(rdb, pipe redis.UniversalClient) *Client {
	return &Client{UniversalClient: rdb, batch: NewWithPipe(rdb, pipe)}
}

// Unwrap returns the client under a Client (rdb itself otherwise), for the
// code that needs a *redis.Client or *redis.ClusterClient.
func Unwrap(rdb redis.UniversalClient) redis.UniversalClient {
	if c, ok := rdb.(*Client); ok {
		return c.UniversalClient
	}
	return rdb
}

// Close closes the client and the connections of its batches.
func (c *Client) Close() error {
	return errors.Join(c.UniversalClient.Close(), c.batch.Close())
}

// Batcher is the Client's Batcher (a redis.Scripter).
func (c *Client) Batcher() *Batcher { return c.batch }

// Batch sends cmd in a batch, as Batcher.Do does.
func (c *Client) Batch(ctx context.Context, cmd redis.Cmder) error { return c.batch.Do(ctx, cmd) }

// Eval runs a script by its text, batched.
func (c *Client) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.batch.Eval(ctx, script, keys, args...)
}

// EvalSha runs a loaded script by its hash, batched.
func (c *Client) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return c.batch.EvalSha(ctx, sha1, keys, args...)
}

// EvalRO runs a read-only script by its text, batched.
func (c *Client) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.batch.EvalRO(ctx, script, keys, args...)
}

// EvalShaRO runs a loaded read-only script by its hash, batched.
func (c *Client) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return c.batch.EvalShaRO(ctx, sha1, keys, args...)
}

var _ redis.UniversalClient = (*Client)(nil)
