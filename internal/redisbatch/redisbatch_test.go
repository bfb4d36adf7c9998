package redisbatch

import (
	"context"
	"errors"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/harness"
)

// slowScript keeps Redis busy for about 300 ms: the commands given
// meanwhile wait for the next batch.
var slowScript = redis.NewScript(`
local t = redis.call('TIME')
repeat
  local n = redis.call('TIME')
until (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 300000
return 1`)

// setup starts a Redis for the test and returns a client, a Batcher on it,
// and busy, which gives the Batcher slowScript and returns once that batch
// is on its way, with the channel its error comes on.
func setup(t *testing.T) (rdb *redis.Client, b *Batcher, busy func() <-chan error) {
	t.Helper()
	rdb = harness.RedisClient(t, harness.Redis(t))
	b = New(rdb)
	// Loaded, so that its first EVALSHA is slow (a NOSCRIPT answer would
	// come at once), and so that the commands of a batch are answered in
	// it (after a NOSCRIPT, each sends its text again when it wakes).
	for _, s := range []*redis.Script{slowScript, incrScript} {
		if err := s.Load(context.Background(), rdb).Err(); err != nil {
			t.Fatal(err)
		}
	}
	busy = func() <-chan error {
		slow := make(chan error, 1)
		before := b.batches.Load()
		go func() { slow <- slowScript.Run(context.Background(), b, []string{"slow"}).Err() }()
		for b.batches.Load() == before {
			runtime.Gosched() // the slow batch is on its way once it is counted
		}
		return slow
	}
	return rdb, b, busy
}

var incrScript = redis.NewScript(`return redis.call('INCR', KEYS[1])`)

// noErrors fails the test on the first error of errs.
func noErrors(t *testing.T, errs []error) {
	t.Helper()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestBatches(t *testing.T) {
	t.Parallel()
	rdb, b, busy := setup(t)
	ctx := context.Background()

	// While a slow command is on its way, 50 callers give theirs: they go
	// in the next batch (or a few), and each gets its own answer.
	slow := busy()
	const n = 50
	var wg sync.WaitGroup
	got := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = incrScript.Run(ctx, b, []string{"counter"}).Int()
		}()
	}
	wg.Wait()
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	noErrors(t, errs)
	sort.Ints(got)
	for i, v := range got {
		if v != i+1 {
			t.Fatalf("answers %v, want 1..%d once each", got, n)
		}
	}
	if sent := b.batches.Load(); sent > 1+n/2 {
		t.Fatalf("%d batches for 1 + %d commands given while the first was on its way, want them sent together", sent, n)
	}

	// One command's error is its own.
	if err := rdb.Set(ctx, "text", "not a number", 0).Err(); err != nil {
		t.Fatal(err)
	}
	bad, good := redis.NewIntCmd(ctx, "incr", "text"), redis.NewIntCmd(ctx, "incr", "counter")
	slow = busy()
	var both sync.WaitGroup
	for _, c := range []redis.Cmder{bad, good} {
		both.Add(1)
		go func() { defer both.Done(); _ = b.Do(ctx, c) }()
	}
	both.Wait()
	<-slow
	if bad.Err() == nil || good.Err() != nil || good.Val() != n+1 {
		t.Fatalf("INCR of a string: %v; INCR of the counter: %d, %v", bad.Err(), good.Val(), good.Err())
	}
}

// A script Redis no longer has (a restart, a failover, SCRIPT FLUSH) is
// sent again as text by (*redis.Script).Run, through the Batcher.
func TestScriptAfterFlush(t *testing.T) {
	t.Parallel()
	rdb, b, _ := setup(t)
	ctx := context.Background()
	if v, err := incrScript.Run(ctx, b, []string{"k"}).Int(); err != nil || v != 1 {
		t.Fatalf("first run = %d, %v", v, err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := incrScript.Run(ctx, b, []string{"k"}).Int(); err != nil || v != 2 {
		t.Fatalf("run after SCRIPT FLUSH = %d, %v", v, err)
	}
}

// panicHook panics on the command "boom", after a pause in which others
// give their commands.
type panicHook struct{}

func (panicHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (panicHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "boom" {
			time.Sleep(50 * time.Millisecond)
			panic("boom")
		}
		return next(ctx, cmd)
	}
}
func (panicHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A sender that panics still hands the sending on: the command given
// meanwhile is sent, and the Batcher keeps working.
func TestPanicKeepsTheBatcherGoing(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	rdb.AddHook(panicHook{})
	ctx := context.Background()
	b := New(rdb)
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		_ = b.Do(ctx, redis.NewStatusCmd(ctx, "boom"))
	}()
	for b.batches.Load() == 0 {
		runtime.Gosched()
	}
	during := redis.NewStatusCmd(ctx, "set", "during", "1")
	if err := b.Do(ctx, during); err != nil {
		t.Fatalf("a command given while the sender panicked: %v", err)
	}
	if r := <-panicked; r != "boom" {
		t.Fatalf("the sender's panic: %v, want it to reach the sender", r)
	}
	if err := b.Do(ctx, redis.NewStatusCmd(ctx, "set", "after", "1")); err != nil {
		t.Fatalf("a command after the panic: %v", err)
	}
}

// A caller whose context ends while its command waits for a batch leaves
// at once, its command unsent; the others waiting are answered. A command
// whose context has ended already is not sent at all.
func TestCallersLeaveWhenTheirContextEnds(t *testing.T) {
	t.Parallel()
	rdb, b, busy := setup(t)
	ctx := context.Background()

	ended, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Do(ended, redis.NewStatusCmd(ended, "set", "ended", "1")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do with an ended context = %v, want context.Canceled", err)
	}

	slow := busy()
	stays := make(chan error, 1)
	go func() { stays <- b.Do(ctx, redis.NewStatusCmd(ctx, "set", "stays", "1")) }()
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	if err := b.Do(short, redis.NewStatusCmd(short, "set", "left", "1")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do whose context ended while it waited = %v, want context.DeadlineExceeded", err)
	}
	if waited := time.Since(start); waited > 200*time.Millisecond {
		t.Fatalf("the caller whose context ended waited %s, about the batch on its way", waited)
	}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if err := <-stays; err != nil {
		t.Fatalf("the caller that stayed: %v", err)
	}
	for key, want := range map[string]int64{"ended": 0, "left": 0, "stays": 1} {
		if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != want {
			t.Fatalf("EXISTS %s = %d, %v; want %d", key, n, err, want)
		}
	}
}
