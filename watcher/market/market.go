// Package market takes purchase requests from the API and the console: it
// records each purchase as pending in the ledger, once per purchase ID, and
// queues the task a worker applies. The HTTP routes live with the ledger's
// other routes in internal/api (RegisterLedger); this package is what they
// call to submit a purchase.
package market

import (
	"context"
	"fmt"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/worker/task"
)

// Purchases takes purchase requests (from the API's POST /v1/purchases and
// the console): it records each as pending in the ledger, once per purchase
// ID, and queues its task. It implements api.Purchases.
type Purchases struct {
	Ledger *ledger.Store
	Queue  task.Enqueuer
}

var _ api.Purchases = (*Purchases)(nil)

// Submit records a purchase (once per ID) and queues it while it is pending.
// A finished purchase returns its stored result.
func (p *Purchases) Submit(ctx context.Context, req ledger.PurchaseRequest) (ledger.PurchaseResult, error) {
	res, _, err := p.Ledger.Accept(ctx, req)
	if err != nil || res.Status != ledger.StatusPending {
		return res, err
	}
	// New, or accepted before and not yet applied: (re)queue. The task ID is
	// the purchase ID, so this never queues it twice.
	t, err := task.NewPurchase(task.PurchasePayload{PurchaseID: req.PurchaseID, AssetID: req.AssetID, BuyerID: req.BuyerID, Credits: req.Credits})
	if err == nil {
		_, err = p.Queue.EnqueueContext(ctx, t)
	}
	if err != nil && !task.IsAlreadyQueued(err) {
		return res, fmt.Errorf("%w (%v)", api.ErrQueueUnavailable, err)
	}
	return res, nil
}

// TaskID is the task of a purchase.
func (p *Purchases) TaskID(purchaseID string) string { return task.PurchaseTaskID(purchaseID) }
