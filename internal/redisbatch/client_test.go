package redisbatch

import (
	"context"
	"runtime"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/harness"
)

// A Client sends its scripts through its Batcher: those given while a
// batch is on its way share the next; every other command goes as it
// would. (*redis.Script).Run on a Client falls back to the script's text
// after SCRIPT FLUSH, and wrapping a Client again gives the same one.
func TestClientBatchesScripts(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	ctx := context.Background()
	c := Wrap(rdb)
	if Wrap(c) != c {
		t.Fatal("Wrap of a Client made another: its batches would not be shared")
	}
	if Unwrap(c) != redis.UniversalClient(rdb) || Unwrap(rdb) != redis.UniversalClient(rdb) {
		t.Fatal("Unwrap does not give the client under the Client")
	}
	if err := slowScript.Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}

	slow := make(chan error, 1)
	go func() { slow <- slowScript.Run(ctx, c, []string{"slow"}).Err() }()
	for c.batch.batches.Load() == 0 {
		runtime.Gosched()
	}
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = incrScript.Run(ctx, c, []string{"counter"}).Err()
		}()
	}
	// A plain command does not wait for the slow batch's turn.
	if err := c.Set(ctx, "plain", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if v, err := rdb.Get(ctx, "counter").Int(); err != nil || v != n {
		t.Fatalf("counter = %d, %v, want %d", v, err, n)
	}
	if sent := c.batch.batches.Load(); sent > 1+n/2 {
		t.Fatalf("%d batches for 1 + %d scripts given while the first was on its way, want them sent together", sent, n)
	}

	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := incrScript.Run(ctx, c, []string{"counter"}).Int(); err != nil || v != n+1 {
		t.Fatalf("run after SCRIPT FLUSH = %d, %v", v, err)
	}
}

// asynq's client and server on a Client (their enqueue, fetch and
// completion are scripts) run every task once.
func TestAsynqOnAClient(t *testing.T) {
	t.Parallel()
	c := Wrap(harness.RedisClient(t, harness.Redis(t)))
	ctx := context.Background()
	const n = 200
	var mu sync.Mutex
	seen := map[string]int{}
	done := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(c, asynq.Config{Concurrency: 16, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		mu.Lock()
		defer mu.Unlock()
		seen[string(task.Payload())]++
		if len(seen) == n {
			close(done)
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	client := asynq.NewClientFromRedisClient(c)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := string(rune('a'+i%26)) + string(rune('a'+i/26))
			if _, err := client.EnqueueContext(ctx, asynq.NewTask("t", []byte(id)), asynq.TaskID(id)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	<-done
	srv.Shutdown()
	mu.Lock()
	defer mu.Unlock()
	for id, times := range seen {
		if times != 1 {
			t.Fatalf("task %s ran %d times", id, times)
		}
	}
	if c.batch.batches.Load() == 0 {
		t.Fatal("asynq's scripts did not go through the Client's batches")
	}
}

func TestLaneOf(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := &Batcher{perSlot: true}
	for _, tc := range []struct {
		cmd  redis.Cmder
		want string
	}{
		{evalCmd(ctx, "evalsha", "abc", []string{"asynq:{uploads}:pending", "asynq:{uploads}:active"}, nil), "uploads"},
		{evalCmd(ctx, "eval", "return 1", []string{"dab:{bank}:ledger:balances"}, []any{"x"}), "bank"},
		{evalCmd(ctx, "evalsha", "abc", []string{"asynq:servers"}, nil), "asynq:servers"},
		{evalCmd(ctx, "evalsha", "abc", nil, []any{"{a}"}), ""},
		{evalCmd(ctx, "evalsha", "abc", []string{"a{}b"}, nil), "a{}b"}, // an empty tag is no tag
		{redis.NewIntCmd(ctx, "hset", "asynq:{purchases}:t:1", "result", "x"), "purchases"},
	} {
		if got := cluster.laneOf(tc.cmd); got != tc.want {
			t.Errorf("lane of %v = %q, want %q", tc.cmd.Args(), got, tc.want)
		}
		if got := (&Batcher{}).laneOf(tc.cmd); got != "" {
			t.Errorf("lane of %v off a Cluster = %q, want one lane", tc.cmd.Args(), got)
		}
	}
}

// On a Cluster each hash tag has batches of its own: a command for a node
// that does not answer (here a blocked BLPOP) does not hold back another
// slot's.
func TestLanesAreApart(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	ctx := context.Background()
	b := New(rdb)
	b.perSlot = true
	blocked := make(chan error, 1)
	go func() { blocked <- b.Do(ctx, redis.NewStringSliceCmd(ctx, "blpop", "{a}list", 0)) }()
	for b.batches.Load() == 0 {
		runtime.Gosched()
	}
	// Given while {a}'s batch is on its way: in a lane of its own, it is
	// sent at once and answered while the BLPOP still waits.
	if err := b.Do(ctx, redis.NewStatusCmd(ctx, "set", "{b}key", "1")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-blocked:
		t.Fatalf("the BLPOP ended (%v) before its list had an element", err)
	default:
	}
	if err := rdb.RPush(ctx, "{a}list", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
}
