package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/worker/task"
)

// handlePurchase applies a purchase to the ledger. The ledger script makes it
// exactly once, by the market rules (the house sells unowned assets at their
// price, owners sell only what they list): a re-run returns the stored
// result. Rejections (unknown asset, already owner, not for sale, wrong
// price, insufficient credits) are results, not errors: the task completes
// and nothing moves. The buyer was proved by the intake (api.Caller.Buyer).
//
// With DAB_REDIS_MIN_REPLICAS set, a result the replicas have not
// acknowledged is ledger.ErrNotReplicated: the task fails and is retried
// (the re-run returns the stored result and waits again), the purchase
// reads pending meanwhile, and purchase.done is logged only once the
// replicas have it.
func (w *Worker) handlePurchase(ctx context.Context, t *asynq.Task) error {
	p, err := task.DecodePurchase(t.Payload())
	if err != nil {
		return err
	}
	taskID, _ := asynq.GetTaskID(ctx)
	res, err := w.deps.Ledger.Apply(ctx, ledger.PurchaseRequest{PurchaseID: p.PurchaseID, AssetID: p.AssetID, BuyerID: p.BuyerID, Credits: p.Credits})
	if errors.Is(err, ledger.ErrInvalid) || errors.Is(err, ledger.ErrConflict) {
		return fmt.Errorf("purchase %s: %w: %w", p.PurchaseID, err, asynq.SkipRetry)
	}
	if err != nil {
		return fmt.Errorf("purchase %s: %w", p.PurchaseID, err)
	}
	b, _ := json.Marshal(res)
	if err := w.writeTaskResult(ctx, t, b); err != nil {
		return fmt.Errorf("purchase %s: %w", p.PurchaseID, err)
	}
	if w.metrics != nil {
		outcome := res.Status
		if res.Reason != "" {
			outcome = res.Reason
		}
		w.metrics.Purchases.WithLabelValues(outcome).Inc()
	}
	w.log.Info("purchase.done", "task_id", taskID, "purchase_id", p.PurchaseID, "asset_id", p.AssetID,
		"buyer", p.BuyerID, "credits", p.Credits, "status", res.Status, "reason", res.Reason, "entry_id", res.EntryID)
	return nil
}
