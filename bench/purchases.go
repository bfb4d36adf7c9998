package main

// The purchase runs: ledger script, end to end, and the Redis ceiling.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/worker/task"
)

const ceilingLua = `
redis.call('HGET', KEYS[1], 'status')
redis.call('EXISTS', KEYS[2])
redis.call('HGET', KEYS[2], 'owner')
redis.call('HGET', KEYS[2], 'price')
redis.call('HGET', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[1], -1)
redis.call('HINCRBY', KEYS[3], 'seller', 1)
redis.call('HSET', KEYS[2], 'owner', ARGV[1])
local e = redis.call('XADD', KEYS[4], '*', 'kind', 'purchase', 'amount', '1', 'purchase_id', ARGV[1])
redis.call('LPUSH', KEYS[5], e)
redis.call('LPUSH', KEYS[6], e)
redis.call('HSET', KEYS[1], 'status', 'succeeded', 'entry_id', e)
redis.call('SADD', KEYS[7], ARGV[1])
return e`

// runPurchases measures purchases per second through the ledger script
// directly and end to end (enqueue -> `dab work` -> ledger), next to
// redis-benchmark running a script of the same Redis work as the ceiling.
func runPurchases(dabBin string, env []string, rdb *redis.Client, r *localsvc.Redis) error {
	ctx := context.Background()
	const n, conc = 5000, 16
	assets := asset.NewStore(rdb, "bench:")
	led := ledger.New(rdb, "bench:", "house")
	ids := make([]string, 2*n)
	for i := range ids {
		rec, _, err := assets.Put(ctx, asset.Record{Name: "p", Type: "generic", Path: fmt.Sprint(i), S3Bucket: "b", S3Key: fmt.Sprintf("generic/p%d", i), SHA256: "s",
			Metadata: map[string]string{asset.PriceMetadata: "1"}}) // unpriced assets are not for sale
		if err != nil {
			return err
		}
		ids[i] = rec.ID
	}
	for b := range conc {
		if _, err := led.Grant(ctx, fmt.Sprintf("bench-%d", b), fmt.Sprintf("buyer%d", b), 1<<40); err != nil {
			return err
		}
	}
	parallel := func(count int, do func(i int) error) (float64, error) {
		var wg sync.WaitGroup
		errs := make(chan error, conc)
		start := time.Now()
		for w := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < count; i += conc {
					if err := do(i); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		select {
		case err := <-errs:
			return 0, err
		default:
		}
		return float64(count) / time.Since(start).Seconds(), nil
	}
	direct, err := parallel(n, func(i int) error {
		_, err := led.Apply(ctx, ledger.PurchaseRequest{PurchaseID: fmt.Sprintf("d%d", i), AssetID: ids[i], BuyerID: fmt.Sprintf("buyer%d", i%conc), Credits: 1})
		return err
	})
	if err != nil {
		return err
	}

	// End to end: record as pending, enqueue, a worker applies it.
	worker := exec.Command(dabBin, "work")
	worker.Env = append(env, "DAB_KEY_PREFIX=bench:", "DAB_CONCURRENCY=16")
	worker.Stdout, worker.Stderr = io.Discard, io.Discard
	if err := worker.Start(); err != nil {
		return err
	}
	defer func() {
		worker.Process.Signal(os.Interrupt)
		worker.Wait()
	}()
	client := asynq.NewClientFromRedisClient(rdb)
	start := time.Now()
	if _, err := parallel(n, func(i int) error {
		p := ledger.PurchaseRequest{PurchaseID: fmt.Sprintf("e%d", i), AssetID: ids[n+i], BuyerID: fmt.Sprintf("buyer%d", i%conc), Credits: 1}
		if _, _, err := led.Accept(ctx, p); err != nil {
			return err
		}
		t, err := task.NewPurchase(task.PurchasePayload{PurchaseID: p.PurchaseID, AssetID: p.AssetID, BuyerID: p.BuyerID, Credits: p.Credits})
		if err == nil {
			_, err = client.EnqueueContext(ctx, t)
		}
		return err
	}); err != nil {
		return err
	}
	for {
		done, err := rdb.SCard(ctx, led.Keys().Purchases()).Result()
		if err != nil {
			return err
		}
		if done >= 2*n {
			break
		}
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("only %d of %d purchases applied after 5 minutes", done-n, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	endToEnd := float64(n) / time.Since(start).Seconds()

	// The ceiling: redis-benchmark running EVALSHA of the same Redis work.
	ceiling := 0.0
	port := strings.TrimPrefix(r.Addr(), "127.0.0.1:")
	sha, err := exec.Command("redis-cli", "-p", port, "SCRIPT", "LOAD", ceilingLua).Output()
	if err == nil {
		out, berr := exec.Command("redis-benchmark", "-p", port, "-n", "50000", "-c", strconv.Itoa(conc), "-r", "100000000", "-q",
			"EVALSHA", strings.TrimSpace(string(sha)), "7", "c:p:__rand_int__", "c:a:__rand_int__", "c:bal", "c:ent", "c:h:__rand_int__", "c:h:s", "c:set", "b__rand_int__").Output()
		if berr == nil {
			f := strings.Fields(lastLine(strings.ReplaceAll(string(out), "\r", "\n")))
			for i, w := range f {
				if w == "requests" && i > 0 {
					ceiling, _ = strconv.ParseFloat(f[i-1], 64)
				}
			}
		}
	}
	fmt.Printf("purchases (%d each, %d-way)\n", n, conc)
	fmt.Printf("  ledger script directly        %9.0f /s\n", direct)
	fmt.Printf("  end to end (enqueue, worker)  %9.0f /s\n", endToEnd)
	if ceiling > 0 {
		fmt.Printf("  redis-benchmark EVALSHA       %9.0f /s  (the same Redis work; direct/ceiling %.2f, end-to-end/ceiling %.2f)\n\n", ceiling, direct/ceiling, endToEnd/ceiling)
	} else {
		fmt.Printf("  redis-benchmark not available: no ceiling measured\n\n")
	}
	return nil
}
