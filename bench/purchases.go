package main

// P3: purchases end to end (record as pending, enqueue, `dab work` applies
// them to the ledger) next to asynq's own rate of no-op tasks on the same
// Redis, at the same concurrency: how much of asynq's ceiling dab keeps.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/redisbatch"
	"github.com/dab-assets/dab/worker/task"
)

const (
	// enqueuers is how many clients enqueue at once, in both halves.
	enqueuers = 16
	// noopQueue and noopType are the no-op tasks' own queue and type, which
	// no dab worker serves.
	noopQueue = "bench-noop"
	noopType  = "bench:noop"
)

func (b *bench) p3Purchases(ctx context.Context, t *table) error {
	o := b.opt
	r, err := b.newRun("p3")
	if err != nil {
		return err
	}
	defer r.stopAll(nil)
	// The enqueuers do what dab's HTTP intake does, on a client as dab's
	// (its scripts batched, one batcher for the ledger and the queue).
	rdb := redisbatch.Wrap(b.rdb)
	defer rdb.Batcher().Close()
	assets := asset.NewStore(rdb, r.prefix)
	led := ledger.New(rdb, r.prefix, "house")
	ids := make([]string, o.purchases)
	for i := range ids {
		rec, _, err := assets.Put(ctx, asset.Record{Name: "p", Type: "generic", Path: fmt.Sprint(i), S3Bucket: bucket, S3Key: r.key(fmt.Sprint(i)), SHA256: "s",
			Metadata: map[string]string{asset.PriceMetadata: "1"}}) // unpriced assets are not for sale
		if err != nil {
			return err
		}
		ids[i] = rec.ID
	}
	for c := range enqueuers {
		if _, err := led.Grant(ctx, fmt.Sprintf("bench-%d", c), fmt.Sprintf("buyer%d", c), 1<<40); err != nil {
			return err
		}
	}

	if _, err := r.start(ctx, "work"); err != nil {
		return err
	}
	client := asynq.NewClientFromRedisClient(rdb)
	cpu0, err := b.redisCPU(ctx)
	if err != nil {
		return err
	}
	driver0 := selfCPU()
	start := time.Now()
	if err := parallel(ctx, o.purchases, func(i int) error {
		p := ledger.PurchaseRequest{PurchaseID: fmt.Sprintf("e%d", i), AssetID: ids[i], BuyerID: fmt.Sprintf("buyer%d", i%enqueuers), Credits: 1}
		if _, _, err := led.Accept(ctx, p); err != nil {
			return err
		}
		purchase, err := task.NewPurchase(task.PurchasePayload{PurchaseID: p.PurchaseID, AssetID: p.AssetID, BuyerID: p.BuyerID, Credits: p.Credits})
		if err == nil {
			_, err = client.EnqueueContext(ctx, purchase)
		}
		return err
	}); err != nil {
		return err
	}
	enqueued := time.Since(start).Seconds()
	applied := func() (int, error) {
		n, err := b.rdb.SCard(ctx, led.Keys().Purchases()).Result()
		return int(n), err
	}
	if err := waitCount(ctx, o.purchases, o.timeout, r.servers, applied); err != nil {
		return fmt.Errorf("purchases applied: %w", err)
	}
	dabRate := float64(o.purchases) / time.Since(start).Seconds()
	cpu1, err := b.redisCPU(ctx)
	if err != nil {
		return err
	}
	driverCPU := selfCPU() - driver0
	rss := r.stopAll(t)
	workCPU := r.cpu("dab work")

	noopRate, noopEnqueued, noopCPU, err := b.noopRate(ctx)
	if err != nil {
		return err
	}
	// The enqueue times say whether a rate was bound by the enqueuers; the
	// CPU redis-server spent per task, whether by Redis.
	t.add(row{
		work: fmt.Sprintf("P3  %s purchases end to end (pending, enqueue, work, ledger)", count(o.purchases)),
		dab: fmt.Sprintf("%s (all enqueued after %s; CPU per purchase: redis %s, work %s, driver %s)", perSec(dabRate, 1, "purchases"), seconds(enqueued),
			micros((cpu1-cpu0)/float64(o.purchases)), micros(workCPU/float64(o.purchases)), micros(driverCPU/float64(o.purchases))),
		s5cmd: fmt.Sprintf("asynq no-op: %s (enqueued after %s; CPU per task: redis %s, driver %s)", perSec(noopRate, 1, "tasks"), seconds(noopEnqueued),
			micros(noopCPU.redis/float64(o.purchases)), micros(noopCPU.driver/float64(o.purchases))),
		ratio: fmt.Sprintf("%.2f of asynq's rate", dabRate/noopRate),
		rss:   rss,
	})
	return nil
}

// noopRate enqueues as many no-op tasks as P3 has purchases, the same way
// (enqueuers at once, the options task.NewPurchase gives: task ID, retries,
// retention) into an asynq server in this process configured like dab's
// worker, and returns tasks/s from the first enqueue to the last handled,
// the seconds the enqueueing took and the CPU seconds redis-server and the
// driver (enqueuers and server) spent.
func (b *bench) noopRate(ctx context.Context) (rate, enqueued float64, cpu cpuUse, err error) {
	n := b.opt.purchases
	var handled atomic.Int64
	srv := asynq.NewServerFromRedisClient(b.rdb, asynq.Config{
		Concurrency: b.opt.concurrency,
		Queues:      map[string]int{noopQueue: 1},
		// dab's worker naps 100 ms, not asynq's default 1 s, when idle.
		TaskCheckInterval: 100 * time.Millisecond,
		LogLevel:          asynq.WarnLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		handled.Add(1)
		return nil
	})); err != nil {
		return 0, 0, cpuUse{}, err
	}
	defer srv.Shutdown()
	client := asynq.NewClientFromRedisClient(b.rdb)
	cpu0, err := b.redisCPU(ctx)
	if err != nil {
		return 0, 0, cpuUse{}, err
	}
	driver0 := selfCPU()
	start := time.Now()
	if err := parallel(ctx, n, func(i int) error {
		id := fmt.Sprintf("noop-%d", i)
		_, err := client.EnqueueContext(ctx, asynq.NewTask(noopType, []byte(`{"purchase_id":"`+id+`"}`)),
			asynq.TaskID(id), asynq.Queue(noopQueue), asynq.MaxRetry(task.DefaultMaxRetry), asynq.Retention(task.DefaultRetention))
		return err
	}); err != nil {
		return 0, 0, cpuUse{}, err
	}
	enqueued = time.Since(start).Seconds()
	if err := waitCount(ctx, n, b.opt.timeout, nil, func() (int, error) { return int(handled.Load()), nil }); err != nil {
		return 0, 0, cpuUse{}, fmt.Errorf("no-op tasks handled: %w", err)
	}
	rate = float64(n) / time.Since(start).Seconds()
	cpu.driver = selfCPU() - driver0
	cpu1, err := b.redisCPU(ctx)
	cpu.redis = cpu1 - cpu0
	return rate, enqueued, cpu, err
}

// parallel runs do(0..count-1), enqueuers at a time.
func parallel(ctx context.Context, count int, do func(i int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, enqueuers)
	for w := range enqueuers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < count && ctx.Err() == nil; i += enqueuers {
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
		return err
	default:
		return ctx.Err()
	}
}

// waitCount polls get every 5 ms until it reaches want.
func waitCount(ctx context.Context, want int, timeout time.Duration, servers []*child, get func() (int, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := get()
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		if err := anyExited(servers); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d after %s", n, want, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// redisCPU is the CPU time redis-server has used so far, in seconds (INFO
// cpu: used_cpu_sys + used_cpu_user).
func (b *bench) redisCPU(ctx context.Context) (float64, error) {
	info, err := b.rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("redis INFO cpu %s: %w", k, err)
			}
			total += f
		}
	}
	return total, nil
}

// cpuUse is CPU time in seconds.
type cpuUse struct{ redis, driver float64 }

// selfCPU is the CPU time this process has used, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// micros prints seconds as microseconds.
func micros(sec float64) string { return fmt.Sprintf("%.0f µs", sec*1e6) }
