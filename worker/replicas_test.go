package worker_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/worker"
	"github.com/dab-assets/dab/worker/task"
)

// runWorker runs a worker with led until stop is called (or the test ends).
func (b *bundle) runWorker(t *testing.T, led *ledger.Store, log *harness.LogBuffer) (stop func()) {
	t.Helper()
	return b.runWith(t, func(cfg *worker.Config, d *worker.Deps) {
		cfg.Concurrency, cfg.Logger, d.Ledger = 2, slog.New(slog.NewJSONHandler(log, nil)), led
	})
}

// TestPurchaseNotReplicatedIsRetriedNotDone: with more replicas required
// than acknowledge, a purchase task fails and is retried, the purchase
// reads pending and no purchase.done is logged; once enough replicas
// acknowledge, the retry completes it.
func TestPurchaseNotReplicatedIsRetriedNotDone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	harness.RedisReplica(t, b.redis)
	ctx := context.Background()
	plain := ledger.New(b.rdb, "dab:", "house")
	rec, _, err := b.assets.Put(ctx, asset.Record{Name: "a.txt", Type: "generic", Path: "a.txt", S3Bucket: "b", S3Key: "generic/a.txt", SHA256: "s",
		Metadata: map[string]string{"price": "30"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Grant(ctx, "g-1", "alice", 100); err != nil {
		t.Fatal(err)
	}
	p := ledger.PurchaseRequest{PurchaseID: "p-1", AssetID: rec.ID, BuyerID: "alice", Credits: 30}
	if _, _, err := plain.Accept(ctx, p); err != nil {
		t.Fatal(err)
	}
	tk, err := task.NewPurchase(task.PurchasePayload{PurchaseID: p.PurchaseID, AssetID: p.AssetID, BuyerID: p.BuyerID, Credits: p.Credits})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Enqueue(tk); err != nil {
		t.Fatal(err)
	}
	taskID := task.PurchaseTaskID(p.PurchaseID)

	// Two replicas required, one runs.
	var log1 harness.LogBuffer
	stop := b.runWorker(t, ledger.NewWithOptions(b.rdb, "dab:", "house", ledger.Options{MinReplicas: 2, ReplicaTimeout: 200 * time.Millisecond}), &log1)
	if info := b.waitTask(t, task.QueuePurchases, taskID, asynq.TaskStateRetry); !strings.Contains(info.LastErr, "not_replicated") {
		t.Fatalf("task's last error = %q, want not_replicated", info.LastErr)
	}
	stop()
	if got, err := plain.GetPurchase(ctx, p.PurchaseID); err != nil || got.Status != ledger.StatusPending {
		t.Fatalf("GetPurchase = %+v %v, want pending", got, err)
	}
	if strings.Contains(log1.String(), "purchase.done") {
		t.Fatalf("purchase.done logged for a purchase the replicas did not acknowledge:\n%s", log1.String())
	}

	// One replica required: the retry completes the purchase, once.
	var log2 harness.LogBuffer
	b.runWorker(t, ledger.NewWithOptions(b.rdb, "dab:", "house", ledger.Options{MinReplicas: 1, ReplicaTimeout: 5 * time.Second}), &log2)
	_ = b.insp.RunTask(task.QueuePurchases, taskID) // a retry waits its backoff; the worker's shutdown may have made it pending already
	b.waitTask(t, task.QueuePurchases, taskID, asynq.TaskStateCompleted)
	if got, err := plain.GetPurchase(ctx, p.PurchaseID); err != nil || got.Status != ledger.StatusSucceeded {
		t.Fatalf("GetPurchase = %+v %v, want succeeded", got, err)
	}
	if !strings.Contains(log2.String(), `"msg":"purchase.done"`) {
		t.Fatalf("no purchase.done logged:\n%s", log2.String())
	}
	if a, err := plain.Account(ctx, "alice", 10); err != nil || a.Balance != 70 {
		t.Fatalf("alice = %+v %v, want 70 (bought once)", a, err)
	}
	if r, err := plain.Verify(ctx); err != nil || !r.OK() {
		t.Fatalf("verify: %+v %v", r, err)
	}
}

// TestUploadKeepsSpoolUntilReplicated: with more replicas required than
// acknowledge, an upload's record is written to the master but the task is
// retried and the spool entry stays (a failover to a replica without the
// record would otherwise lose it); once enough replicas acknowledge, the
// retry completes and the entry goes.
func TestUploadKeepsSpoolUntilReplicated(t *testing.T) {
	t.Parallel()
	b := setup(t)
	harness.RedisReplica(t, b.redis)
	m := b.spoolBytes(t, "generic", "replicated.bin", randomBytes(2048, 7))
	taskID := task.UploadTaskID(m.ID)

	var log1 harness.LogBuffer
	stop := b.runWorker(t, ledger.NewWithOptions(b.rdb, "dab:", "house", ledger.Options{MinReplicas: 2, ReplicaTimeout: 200 * time.Millisecond}), &log1)
	info := b.waitState(t, taskID, asynq.TaskStateRetry)
	if !strings.Contains(info.LastErr, "not_replicated") {
		t.Fatalf("task's last error = %q, want not_replicated", info.LastErr)
	}
	stop()
	if _, _, err := b.spool.OpenData(m.ID); err != nil {
		t.Fatalf("spool entry gone before the record was replicated: %v", err)
	}
	if _, err := b.assets.BySpool(context.Background(), m.ID); err != nil {
		t.Fatalf("record not on the master: %v", err)
	}

	var log2 harness.LogBuffer
	b.runWorker(t, ledger.NewWithOptions(b.rdb, "dab:", "house", ledger.Options{MinReplicas: 1, ReplicaTimeout: 5 * time.Second}), &log2)
	_ = b.insp.RunTask(task.QueueUploads, taskID)
	b.waitState(t, taskID, asynq.TaskStateCompleted)
	if _, _, err := b.spool.OpenData(m.ID); err == nil {
		t.Fatal("spool entry kept after the record was replicated")
	}
}
