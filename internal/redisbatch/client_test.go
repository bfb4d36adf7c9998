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

// A Client sends the scripts given through its Batcher in batches, and
// other scripts alone: one given while a batch is on its way does not
// join it. Wrapping a Client again gives the same one; a script Redis
// lost (SCRIPT FLUSH) is sent again as text either way.
func TestClientBatchesOnlyWhatMayRepeat(t *testing.T) {
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
	go func() { slow <- slowScript.Run(ctx, c.Batcher(), []string{"slow"}).Err() }()
	for c.batch.batches.Load() == 0 {
		runtime.Gosched()
	}
	// A script that is not asynq's enqueue or completion, given through
	// the Client while the slow batch is on its way, is sent alone.
	if err := incrScript.Run(ctx, c, []string{"alone"}).Err(); err != nil {
		t.Fatal(err)
	}
	if sent := c.batch.batches.Load(); sent != 1 {
		t.Fatalf("a script given through the Client made %d batches, want it sent alone", sent-1)
	}
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = incrScript.Run(ctx, c.Batcher(), []string{"counter"}).Err()
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
	if v, err := incrScript.Run(ctx, c.Batcher(), []string{"counter"}).Int(); err != nil || v != n+1 {
		t.Fatalf("batched run after SCRIPT FLUSH = %d, %v", v, err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := incrScript.Run(ctx, c, []string{"alone"}).Int(); err != nil || v != 2 {
		t.Fatalf("run through the Client after SCRIPT FLUSH = %d, %v", v, err)
	}
}

// pipelineKeys records the first key of every script sent in a pipeline.
type pipelineKeys struct {
	mu    sync.Mutex
	first []string
}

func (*pipelineKeys) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (*pipelineKeys) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (p *pipelineKeys) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		p.mu.Lock()
		for _, c := range cmds {
			if a := c.Args(); len(a) > 3 && strings.HasPrefix(c.Name(), "eval") {
				p.first = append(p.first, a[3].(string))
			}
		}
		p.mu.Unlock()
		return next(ctx, cmds)
	}
}

// asynq's client and server on a Client run every task once; their
// enqueues given while a batch is on its way go together, and their fetch
// (which pops a new task on each run) is never in a batch.
func TestAsynqOnAClient(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	seen := &pipelineKeys{}
	rdb.AddHook(seen)
	c := Wrap(rdb)
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
	go func() { slow <- slowScript.Run(ctx, c.Batcher(), []string{"slow"}).Err() }()
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
	seen.mu.Lock()
	defer seen.mu.Unlock()
	for _, k := range seen.first {
		if strings.HasSuffix(k, "}:pending") {
			t.Fatalf("asynq's fetch (first key %s) went in a batch", k)
		}
	}
}

func TestAsynqMayRepeat(t *testing.T) {
	t.Parallel()
	q := "asynq:{uploads:h1}:"
	for _, tc := range []struct {
		what string
		keys []string
		want bool
	}{
		{"enqueue", []string{q + "t:upload-1", q + "pending"}, true},
		{"done, mark as complete, requeue", []string{q + "active", q + "lease", q + "t:upload-1", q + "processed:2026-12-02", q + "processed"}, true},
		{"fetch", []string{q + "pending", q + "paused", q + "active", q + "lease"}, false},
		{"retry", []string{q + "t:upload-1", q + "active", q + "lease", q + "retry", q + "processed:2026-12-02", q + "failed:2026-12-02", q + "processed", q + "failed"}, false},
		{"schedule", []string{q + "t:upload-1", q + "scheduled"}, false},
		{"forward", []string{q + "scheduled", q + "pending", q + "completed"}, false},
		{"heartbeat", []string{"asynq:servers:{host:1:abc}", "asynq:workers:{host:1:abc}"}, false},
		{"dab's own", []string{"dab:{bank}:asset:1"}, false},
		{"no keys", nil, false},
	} {
		if got := asynqMayRepeat(tc.keys); got != tc.want {
			t.Errorf("%s (%v): %v, want %v", tc.what, tc.keys, got, tc.want)
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
