package redisbatch

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/idem"
)

// cutProxy forwards TCP to a Redis. Armed with a marker and n, the
// connection on which the client next sends the marker passes on n bytes
// of the answers that follow and is then cut (a Redis that restarts, a
// failover's CLIENT KILL, a reset: the first answers of a pipeline
// arrived, the rest did not).
type cutProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	marker string
	budget int64
}

func (p *cutProxy) arm(marker string, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.marker, p.budget = marker, n
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			var budget atomic.Int64 // > 0: cut after that many bytes back
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						p.mu.Lock()
						if p.marker != "" && strings.Contains(string(buf[:n]), p.marker) {
							budget.Store(p.budget)
							p.marker = ""
						}
						p.mu.Unlock()
						if _, err := s.Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				s.Close()
				c.Close()
			}()
			go func() {
				buf := make([]byte, 1)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							break
						}
						if budget.Load() > 0 && budget.Add(-1) == 0 {
							break
						}
					}
					if err != nil {
						break
					}
				}
				s.Close()
				c.Close()
			}()
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

// batchOf gives first, then second (a batched script), while a batch is
// on its way (a slow script, on the client's one connection): had first
// gone through the batches, the two would go together when it is answered. The connection on which the
// client then sends marker is cut cut bytes into its answers.
func batchOf(t *testing.T, c *Client, p *cutProxy, marker string, cut int64, first, second func()) {
	t.Helper()
	ctx := context.Background()
	b := c.batch
	slow := make(chan error, 1)
	go func() { slow <- slowScript.Run(ctx, c.Batcher(), []string{"slow"}).Err() }()
	for b.batches.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // EVALSHA written; answer in 300 ms
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); first() }()
	waitPending(b, 1)
	go func() { defer wg.Done(); second() }()
	waitPending(b, 2)
	p.arm(marker, cut)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

// waitPending waits until n commands wait for the next batch, or 100 ms
// (a command that does not go through the batches waits for the client's
// connection instead).
func waitPending(b *Batcher, n int) {
	for range 100 {
		b.mu.Lock()
		got := 0
		if l := b.lanes[""]; l != nil {
			got = len(l.pending)
		}
		b.mu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func proxiedClient(t *testing.T) (*redis.Client, *Client, *cutProxy) {
	r := harness.Redis(t)
	direct := harness.RedisClient(t, r)
	for _, s := range []*redis.Script{slowScript, incrScript, dequeueScript} {
		if err := s.Load(context.Background(), direct).Err(); err != nil {
			t.Fatal(err)
		}
	}
	p := newCutProxy(t, r.Addr())
	// One connection, so that the batches go one after the other on it.
	rdb := redis.NewClient(&redis.Options{Addr: p.addr(), PoolSize: 1})
	t.Cleanup(func() { rdb.Close() })
	return direct, Wrap(rdb), p
}

// incrOnce is a script that must not run twice.
const incrOnce = "-- must run once\nreturn redis.call('INCR', KEYS[1])"

// A script whose answer came back is not run again when the connection
// breaks before the answer of a script after it in the same batch: go-redis
// sends a pipeline again whole. Sent alone, a script whose answer came back
// is never sent again (TestAnsweredCommandAloneRunsOnce).
func TestAnsweredScriptRunsOnceWhenTheConnectionBreaksAfterIt(t *testing.T) {
	direct, c, p := proxiedClient(t)
	ctx := context.Background()
	var first, second *redis.Cmd
	batchOf(t, c, p, "first", int64(len(":1\r\n")),
		func() { first = c.Eval(ctx, incrOnce, []string{"first"}) },
		func() { second = incrScript.Run(ctx, c.Batcher(), []string{"second"}) })
	n, _ := direct.Get(ctx, "first").Int()
	t.Logf("first: answer %v, err %v; ran %d times. second: answer %v, err %v", first.Val(), first.Err(), n, second.Val(), second.Err())
	if n != 1 || first.Err() != nil {
		t.Fatalf("the first INCR ran %d times (%v): its answer had come back, and the break after it sent the whole batch again", n, first.Err())
	}
	// The second, left without an answer, went again alone: answered, as
	// a lone command whose answer was lost is by go-redis's retry.
	if err := second.Err(); err != nil {
		t.Fatalf("the command after the break: %v, want it sent again and answered", err)
	}
}

// dab's consequence: an Idempotency-Key claim run again finds its own
// claim; the intake then takes its first request for a repeat, removes
// the spooled upload and answers 202 "replayed" with nothing queued.
func TestIdempotencyClaimIsFreshWhenTheConnectionBreaksAfterIt(t *testing.T) {
	_, c, p := proxiedClient(t)
	st := idem.New(c, "dab:")
	ctx := context.Background()
	// Its script loaded, as on a running dab.
	if _, _, err := st.Claim(ctx, "upload", "warm", "fp", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	var fresh bool
	var err error
	batchOf(t, c, p, "key-1", int64(len("*1\r\n:1\r\n")),
		func() { _, fresh, err = st.Claim(ctx, "upload", "key-1", "fp", []byte(`{"task_id":"upload-1"}`)) },
		func() { _ = incrScript.Run(ctx, c.Batcher(), []string{"other"}) })
	if err != nil || !fresh {
		t.Fatalf("the first use of an Idempotency-Key: fresh=%v err=%v; want fresh (the intake would drop the upload and answer 'replayed')", fresh, err)
	}
}

// asynq v0.26's fetch (rdb.Dequeue's script).
var dequeueScript = redis.NewScript(`
if redis.call("EXISTS", KEYS[2]) == 0 then
	local id = redis.call("RPOPLPUSH", KEYS[1], KEYS[3])
	if id then
		local key = ARGV[2] .. id
		redis.call("HSET", key, "state", "active")
		redis.call("HDEL", key, "pending_since")
		redis.call("ZADD", KEYS[4], ARGV[1], id)
		return redis.call("HGET", key, "msg")
	end
end
return nil`)

// asynq's consequence: its fetch run again pops a second task into active
// with a lease; the processor gets only the second. The first is run by
// nobody until its lease expires (30 s, then the recoverer's minute), and
// then counts as a failed attempt (archived at its last).
func TestAsynqFetchRunsOnceWhenTheConnectionBreaksAfterIt(t *testing.T) {
	direct, c, p := proxiedClient(t)
	ctx := context.Background()
	q := "asynq:{default}:"
	for _, id := range []string{"t1", "t2", "t3"} {
		direct.LPush(ctx, q+"pending", id)
		direct.HSet(ctx, q+"t:"+id, "msg", "msg-"+id, "state", "pending")
	}
	var got *redis.Cmd
	keys := []string{q + "pending", q + "paused", q + "active", q + "lease"}
	batchOf(t, c, p, "pending", int64(len("$6\r\nmsg-t1\r\n")),
		func() { got = dequeueScript.Run(ctx, c, keys, time.Now().Add(30*time.Second).Unix(), q+"t:") },
		func() { _ = incrScript.Run(ctx, c.Batcher(), []string{"other"}) })
	active, _ := direct.LRange(ctx, q+"active", 0, -1).Result()
	t.Logf("the processor got %v (%v); active: %v", got.Val(), got.Err(), active)
	if len(active) != 1 {
		t.Fatalf("one fetch answered %v, and %d tasks are active (%v): the others wait for their lease to expire, run by nobody", got.Val(), len(active), active)
	}
}

// The control: a command sent alone whose answer came back is not sent
// again when the connection is cut right after that answer.
func TestAnsweredCommandAloneRunsOnce(t *testing.T) {
	direct, c, p := proxiedClient(t)
	ctx := context.Background()
	p.arm("solo", int64(len(":1\r\n")))
	v, err := c.Eval(ctx, incrOnce, []string{"solo"}).Int()
	n, _ := direct.Get(ctx, "solo").Int()
	if v != 1 || err != nil || n != 1 {
		t.Fatalf("INCR alone: answer %d, %v; ran %d times", v, err, n)
	}
}

// A replica being promoted (Sentinel's failover; the client still on it):
// a write answered READONLY is sent again after a short backoff when it
// goes alone (go-redis retries READONLY up to MaxRetries); in a batch,
// only the batch's first command's error is looked at: a write behind a
// script that wrote nothing fails at once.
func TestWriteBehindAReadIsRetriedOnReadonly(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprint("batched=", batched), func(t *testing.T) {
			master := harness.Redis(t)
			replica := harness.RedisReplica(t, master)
			rdb := harness.RedisClient(t, replica)
			ctx := context.Background()
			if err := slowScript.Load(ctx, rdb).Err(); err != nil {
				t.Fatal(err)
			}
			b := New(rdb)
			sent := make(chan struct{})
			// The replica becomes the master 30 ms after the commands go.
			promoted := make(chan struct{})
			go func() {
				defer close(promoted)
				<-sent
				time.Sleep(30 * time.Millisecond)
				c := redis.NewClient(&redis.Options{Addr: replica.Addr()})
				defer c.Close()
				c.Do(ctx, "replicaof", "no", "one")
			}()
			var read, write *redis.Cmd
			if batched {
				// A slow (read-only) script on its way; the read, then the
				// write, are given meanwhile and go together when it is
				// answered.
				slow := make(chan error, 1)
				go func() { slow <- slowScript.Run(ctx, b, []string{"slow"}).Err(); close(sent) }()
				for b.batches.Load() == 0 {
					time.Sleep(time.Millisecond)
				}
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); read = b.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"r"}) }()
				waitPending(b, 1)
				go func() { defer wg.Done(); write = b.Eval(ctx, "return redis.call('INCR', KEYS[1])", []string{"w"}) }()
				waitPending(b, 2)
				wg.Wait()
			} else {
				close(sent)
				read = b.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"r"})
				write = b.Eval(ctx, "return redis.call('INCR', KEYS[1])", []string{"w"})
			}
			<-promoted
			if err := read.Err(); err != nil && err != redis.Nil {
				t.Fatalf("the read: %v", err)
			}
			if err := write.Err(); err != nil {
				t.Fatalf("the write during the promotion: %v (batches: %d)", err, b.batches.Load())
			}
		})
	}
}
