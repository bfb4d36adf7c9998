package redisbatch

import (
	"context"
	"runtime"
	"strings"
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
	for _, s := range []*redis.Script{slowScript, incrScript} { // as in setup
		if err := s.Load(ctx, rdb).Err(); err != nil {
			t.Fatal(err)
		}
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
	noErrors(t, errs)
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

// The copy a Batcher sends its batches on keeps the client's timeouts
// (go-redis stores "none" as 0, which a new client would take for its
// default), never sends a command again, and is not made for a Sentinel
// client (it would keep its connections to a master that failed over).
func TestCopyNoRetries(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ReadTimeout: -1, WriteTimeout: 7 * time.Second})
	defer rdb.Close()
	c := copyNoRetries(rdb).(*redis.Client)
	defer c.Close()
	got, want := c.Options(), rdb.Options()
	if got.ReadTimeout != want.ReadTimeout || got.WriteTimeout != want.WriteTimeout || got.MaxRetries != 0 || got.PoolSize != want.PoolSize {
		t.Fatalf("the copy: read %s write %s, %d retries, pool %d; the client: read %s write %s, pool %d",
			got.ReadTimeout, got.WriteTimeout, got.MaxRetries, got.PoolSize, want.ReadTimeout, want.WriteTimeout, want.PoolSize)
	}
	sentinel := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}})
	defer sentinel.Close()
	if p := copyNoRetries(sentinel); p != nil {
		p.Close()
		t.Fatal("a copy of a Sentinel client was made")
	}
}

// A batch holds at most maxBatch commands; those given past it go in the
// next, and every one is answered.
func TestBatchesAreBounded(t *testing.T) {
	t.Parallel()
	_, b, busy := setup(t)
	ctx := context.Background()
	slow := busy()
	const n = 3*maxBatch + 5
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = incrScript.Run(ctx, b, []string{"bounded"}).Err() }()
	}
	wg.Wait()
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	noErrors(t, errs)
	if sent := b.batches.Load(); sent < 1+(n+maxBatch-1)/maxBatch {
		t.Fatalf("%d batches for %d commands given while one was on its way: more than %d in one", sent, n, maxBatch)
	}
}

// A Batcher without a client for its batches (a Sentinel client wrapped
// by whoever did not make it) sends every command alone and at once: none
// waits for another's answer.
func TestWithoutAPipeEachGoesAtOnce(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	ctx := context.Background()
	b := NewWithPipe(rdb, nil)
	blocked := make(chan error, 1)
	go func() { blocked <- b.Do(ctx, redis.NewStringSliceCmd(ctx, "blpop", "list", 0)) }()
	for {
		clients, err := rdb.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(clients, "cmd=blpop") {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := b.Do(ctx, redis.NewStatusCmd(ctx, "set", "key", "1")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-blocked:
		t.Fatalf("the BLPOP ended (%v) before its list had an element", err)
	default:
	}
	if err := rdb.RPush(ctx, "list", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	if n := b.batches.Load(); n != 0 {
		t.Fatalf("%d batches made without a client for them", n)
	}
}
