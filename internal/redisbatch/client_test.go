package redisbatch

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/harness"
)

// A Client sends its scripts in batches: those given while a batch is on
// its way share the next; every other command goes as it would. Wrapping a
// Client again gives the same one; a script Redis lost (SCRIPT FLUSH) is
// sent again as text.
func TestClientBatchesScripts(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	ctx := context.Background()
	c := Wrap(rdb)
	t.Cleanup(func() { c.batch.Close() })
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
	// A plain command is not batched.
	if err := c.Set(ctx, "plain", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if sent := c.batch.batches.Load(); sent != 1 {
		t.Fatalf("a plain command made %d batches, want it sent as it is", sent-1)
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

// asynq's client and server on a Client run every task once; their
// enqueues given while a batch is on its way go together.
func TestAsynqOnAClient(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	c := Wrap(rdb)
	t.Cleanup(func() { c.batch.Close() })
	ctx := context.Background()
	if err := slowScript.Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}
	const n = 200
	client := asynq.NewClientFromRedisClient(c)
	// asynq registers a queue once per client, with a plain SADD.
	if _, err := client.EnqueueContext(ctx, asynq.NewTask("t", []byte("first")), asynq.TaskID("first")); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() { slow <- slowScript.Run(ctx, c, []string{"slow"}).Err() }()
	for c.batch.batches.Load() == 0 {
		runtime.Gosched()
	}
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
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if sent := c.batch.batches.Load(); sent > 1+n/2 {
		t.Fatalf("%d batches for 1 + %d enqueues given while the first was on its way, want them sent together", sent, n)
	}

	var mu sync.Mutex
	ran := map[string]int{}
	done := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(c, asynq.Config{Concurrency: 16, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		mu.Lock()
		defer mu.Unlock()
		ran[string(task.Payload())]++
		if len(ran) == n+1 {
			close(done)
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	select {
	case <-done:
	case <-time.After(time.Minute):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%d of %d tasks ran within a minute", len(ran), n+1)
	}
	srv.Shutdown()
	mu.Lock()
	defer mu.Unlock()
	for id, times := range ran {
		if times != 1 {
			t.Fatalf("task %s ran %d times", id, times)
		}
	}
}

func TestClusterClientHasLanes(t *testing.T) {
	t.Parallel()
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cluster.Close()
	single := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer single.Close()
	if !Wrap(cluster).batch.perSlot || Wrap(single).batch.perSlot {
		t.Fatal("a lane per hash tag is for a Cluster client only")
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
		{redis.NewCmd(ctx, "EVALSHA", "abc", 1, "x{t}y"), "t"},
		{redis.NewIntCmd(ctx, "hset", "asynq:{purchases}:t:1", "result", "x"), "purchases"},
		{redis.NewCmd(ctx), ""},
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
