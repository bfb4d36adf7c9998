package watcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/worker/task"
)

// PurchaseIntake takes purchase requests over HTTP: it records each as
// pending in the ledger (once per purchase ID) and queues its task.
type PurchaseIntake struct {
	Ledger *ledger.Store
	Queue  Enqueuer
}

// Register adds POST /v1/purchases: for bound purchase tokens (they buy as
// their account), brokers and admin (they name the buyer).
func (p *PurchaseIntake) Register(s *api.Server) {
	s.HandleFunc(http.MethodPost, "/v1/purchases", api.ScopePurchase+","+api.ScopeBroker, p.post)
}

// ErrQueueUnavailable: a purchase is recorded as pending but its task could
// not be queued; sending the same purchase again queues it.
var ErrQueueUnavailable = errors.New("the purchase is recorded as pending but could not be queued: send the same purchase again")

// Submit records a purchase (once per ID) and queues it while it is pending.
// A finished purchase returns its stored result.
func (p *PurchaseIntake) Submit(ctx context.Context, req ledger.PurchaseRequest) (ledger.PurchaseResult, error) {
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
		return res, fmt.Errorf("%w (%v)", ErrQueueUnavailable, err)
	}
	return res, nil
}

// PurchaseAccepted is the answer to a new (or still pending) purchase.
type PurchaseAccepted struct {
	ledger.PurchaseResult
	TaskID    string `json:"task_id"`
	StatusURL string `json:"status_url"`
}

// post: the Idempotency-Key header is the purchase ID; the body is
// {"asset_id", "buyer_id", "credits"} (read by api.DecodeJSON, credits from
// 0 (free) to ledger.CreditsMax by api.ParsePriceCredits). The buyer is
// the caller's (api.Caller.Buyer): a bound token buys as its account
// (buyer_id may be left out; another one is 403 wrong_buyer), a broker or
// admin names it (400 buyer_required without), anyone else may not buy
// (403 not_permitted). A new or pending purchase answers 202;
// a repeat of a finished one answers 200 with its stored result; the same ID
// with other parameters 409.
func (p *PurchaseIntake) post(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("Idempotency-Key")
	if id == "" {
		api.WriteError(w, http.StatusBadRequest, "idempotency_key_required", "send an Idempotency-Key header: it is the purchase ID, so a retried purchase buys once")
		return
	}
	var body struct {
		AssetID string          `json:"asset_id"`
		BuyerID string          `json:"buyer_id"`
		Credits json.RawMessage `json:"credits"`
	}
	if err := api.DecodeJSON(r, &body); err != nil {
		api.WriteDecodeError(w, err, `send {"asset_id": "...", "buyer_id": "...", "credits": N}`)
		return
	}
	caller, _ := api.CallerOf(r.Context())
	buyer, err := caller.Buyer(body.BuyerID)
	switch {
	case errors.Is(err, api.ErrWrongBuyer):
		api.WriteError(w, http.StatusForbidden, "wrong_buyer", err.Error())
		return
	case errors.Is(err, api.ErrBuyerRequired):
		api.WriteError(w, http.StatusBadRequest, "buyer_required", err.Error())
		return
	case err != nil:
		api.WriteError(w, http.StatusForbidden, "not_permitted", err.Error())
		return
	}
	credits, err := api.ParsePriceCredits(body.Credits)
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, "bad_credits", err.Error())
		return
	}
	req := ledger.PurchaseRequest{PurchaseID: id, AssetID: body.AssetID, BuyerID: buyer, Credits: credits}
	res, err := p.Submit(r.Context(), req)
	if errors.Is(err, ledger.ErrConflict) && caller.Account != "" {
		// The stored parameters may be another account's purchase: a
		// bound token learns only that its key is taken.
		api.WriteError(w, http.StatusConflict, "idempotency_conflict", "this Idempotency-Key was used for another purchase: use a new key for a new request")
		return
	}
	if errors.Is(err, ErrQueueUnavailable) {
		api.WriteError(w, http.StatusServiceUnavailable, "queue_unavailable", err.Error())
		return
	}
	if api.WriteLedgerError(w, err) {
		return
	}
	if res.Status != ledger.StatusPending {
		w.Header().Set("Idempotent-Replayed", "true")
		api.WriteJSON(w, http.StatusOK, res)
		return
	}
	status := "/v1/purchases/" + url.PathEscape(id)
	w.Header().Set("Location", status)
	api.WriteJSON(w, http.StatusAccepted, PurchaseAccepted{PurchaseResult: res, TaskID: task.PurchaseTaskID(id), StatusURL: status})
}
