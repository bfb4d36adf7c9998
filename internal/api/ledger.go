package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/idem"
	"github.com/dab-assets/dab/internal/ledger"
)

// Purchases records a purchase and queues its task: the intake does that
// (it owns the task contract); the ledger applies it in a worker.
type Purchases interface {
	// Submit records a purchase (once per ID) and queues it while it is
	// pending; a finished purchase returns its stored result. Errors wrap
	// ErrQueueUnavailable when the task could not be queued.
	Submit(ctx context.Context, req ledger.PurchaseRequest) (ledger.PurchaseResult, error)
	// TaskID is the task of a purchase.
	TaskID(purchaseID string) string
}

// ErrQueueUnavailable: a purchase is recorded as pending but its task could
// not be queued; sending the same purchase again queues it.
var ErrQueueUnavailable = errors.New("the purchase is recorded as pending but could not be queued: send the same purchase again")

// PurchaseAccepted is the answer to a new (or still pending) purchase.
type PurchaseAccepted struct {
	ledger.PurchaseResult
	TaskID    string `json:"task_id"`
	StatusURL string `json:"status_url"`
}

// RegisterLedger adds the market's endpoints in one place: purchases
// (created through purchases, read back), accounts and grants, prices,
// listings and each asset's sales. The market rules themselves are in the
// ledger's scripts; these handlers say who asks. With purchases nil the
// server takes no new purchases (only reads them).
func RegisterLedger(s *Server, led *ledger.Store, assets *asset.Store, purchases Purchases) {
	if purchases != nil {
		s.HandleFunc(http.MethodPost, "/v1/purchases", ScopePurchase+","+ScopeBroker, postPurchase(purchases))
	}
	// The house's price of an asset nobody owns (0: free); an owned
	// asset is sold by its owner's listing instead (409 owned).
	s.HandleFunc(http.MethodPost, "/v1/assets/{id}/price", ScopeAdmin, func(w http.ResponseWriter, r *http.Request) {
		n, ok := readOfferCredits(w, r, `send {"credits": N}: 0 is free; DELETE /v1/assets/{id}/price removes the price`)
		if !ok {
			return
		}
		_, err := led.SetPrice(r.Context(), r.PathValue("id"), n, actor(r))
		writeOffer(w, r, assets, err)
	})
	s.HandleFunc(http.MethodDelete, "/v1/assets/{id}/price", ScopeAdmin, func(w http.ResponseWriter, r *http.Request) {
		_, err := led.ClearPrice(r.Context(), r.PathValue("id"), actor(r))
		writeOffer(w, r, assets, err)
	})
	// An owner's listing: a bound token for its own assets, or admin.
	s.HandleFunc(http.MethodPut, "/v1/assets/{id}/listing", ScopePurchase, func(w http.ResponseWriter, r *http.Request) {
		owner, ok := listingOwner(w, r)
		if !ok {
			return
		}
		n, ok := readOfferCredits(w, r, `send {"credits": N}: 0 is free; DELETE /v1/assets/{id}/listing unlists`)
		if !ok {
			return
		}
		_, err := led.SetListing(r.Context(), r.PathValue("id"), owner, n, actor(r))
		writeOffer(w, r, assets, err)
	})
	s.HandleFunc(http.MethodDelete, "/v1/assets/{id}/listing", ScopePurchase, func(w http.ResponseWriter, r *http.Request) {
		owner, ok := listingOwner(w, r)
		if !ok {
			return
		}
		_, err := led.ClearListing(r.Context(), r.PathValue("id"), owner, actor(r))
		writeOffer(w, r, assets, err)
	})
	s.HandleFunc(http.MethodGet, "/v1/assets/{id}/history", ScopeRead, func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if _, err := assets.Get(r.Context(), id); err != nil {
			writeAssetError(w, err)
			return
		}
		sales, err := led.Sales(r.Context(), id)
		if WriteLedgerError(w, err) {
			return
		}
		WriteJSON(w, http.StatusOK, SalesHistory{AssetID: id, Sales: sales})
	})
	s.HandleFunc(http.MethodPost, "/v1/accounts/{id}/grants", ScopeAdmin, func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			WriteError(w, http.StatusBadRequest, "idempotency_key_required", "send an Idempotency-Key header: a retried grant must not grant twice")
			return
		}
		if err := idem.CheckKey(key); err != nil {
			WriteError(w, http.StatusBadRequest, "bad_idempotency_key", err.Error())
			return
		}
		var body struct {
			Credits json.RawMessage `json:"credits"`
		}
		if err := DecodeJSON(r, &body); err != nil {
			WriteDecodeError(w, err, `send {"credits": N}`)
			return
		}
		n, err := ParseCredits(body.Credits)
		if err != nil {
			WriteError(w, http.StatusBadRequest, "bad_credits", err.Error())
			return
		}
		res, err := led.Grant(r.Context(), key, r.PathValue("id"), n)
		if !WriteLedgerError(w, err) {
			WriteJSON(w, http.StatusCreated, res)
		}
	})
	// A bound token sees its own account only; read, broker and admin
	// tokens see any.
	s.HandleFunc(http.MethodGet, "/v1/accounts/{id}", ScopeRead+","+ScopePurchase+","+ScopeBroker, func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if c, _ := CallerOf(r.Context()); c.Account != "" && c.Account != id {
			WriteError(w, http.StatusForbidden, "not_your_account", fmt.Sprintf("this token acts as %q and sees that account only", c.Account))
			return
		}
		recent := 20
		if v := r.URL.Query().Get("entries"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1000 {
				WriteError(w, http.StatusBadRequest, "bad_entries", "entries must be a whole number from 0 to 1000")
				return
			}
			recent = n
		}
		a, err := led.Account(r.Context(), id, recent)
		if !WriteLedgerError(w, err) {
			WriteJSON(w, http.StatusOK, a)
		}
	})
	// A bound token sees its own purchases only: another account's
	// purchase answers 404, as an unknown one does, so that purchase IDs
	// reveal nothing.
	s.HandleFunc(http.MethodGet, "/v1/purchases/{id}", ScopeRead+","+ScopePurchase+","+ScopeBroker, func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		p, err := led.GetPurchase(r.Context(), id)
		if c, _ := CallerOf(r.Context()); err == nil && c.Account != "" && p.BuyerID != c.Account {
			err = fmt.Errorf("purchase %s: %w", id, ledger.ErrNotFound)
		}
		if !WriteLedgerError(w, err) {
			WriteJSON(w, http.StatusOK, p)
		}
	})
}

// SalesHistory is the answer of GET /v1/assets/{id}/history: every sale of
// the asset, oldest first.
type SalesHistory struct {
	AssetID string        `json:"asset_id"`
	Sales   []ledger.Sale `json:"sales"`
}

// actor names the caller in price and listing entries: its account, else
// its token's name.
func actor(r *http.Request) string {
	c, _ := CallerOf(r.Context())
	if c.Account != "" {
		return c.Account
	}
	return c.Name
}

// listingOwner is whose assets the caller may list: any owner's for admin,
// its own account's for a bound token. Anyone else gets 403 not_owner.
func listingOwner(w http.ResponseWriter, r *http.Request) (string, bool) {
	c, _ := CallerOf(r.Context())
	switch {
	case c.Scopes[ScopeAdmin]:
		return ledger.AnyOwner, true
	case c.Account != "":
		return c.Account, true
	}
	WriteError(w, http.StatusForbidden, "not_owner", "this token acts for no account: only an asset's owner (a token bound to it, such as purchase@alice) or an admin lists it")
	return "", false
}

// readOfferCredits reads {"credits": N} for a price or a listing (0 to
// ledger.CreditsMax) or answers 400.
func readOfferCredits(w http.ResponseWriter, r *http.Request, hint string) (int64, bool) {
	var body struct {
		Credits json.RawMessage `json:"credits"`
	}
	if err := DecodeJSON(r, &body); err != nil {
		WriteDecodeError(w, err, hint)
		return 0, false
	}
	n, err := ParsePriceCredits(body.Credits)
	if err != nil {
		WriteError(w, http.StatusBadRequest, "bad_credits", err.Error())
		return 0, false
	}
	return n, true
}

// writeOffer answers a price or listing change: the asset's record, or the
// error (404 asset_not_found, 409 owned or not_owned, 403 not_owner).
func writeOffer(w http.ResponseWriter, r *http.Request, assets *asset.Store, err error) {
	if errors.Is(err, ledger.ErrNotFound) {
		WriteError(w, http.StatusNotFound, "asset_not_found", err.Error())
		return
	}
	if WriteLedgerError(w, err) {
		return
	}
	rec, err := assets.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		writeAssetError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, rec)
}

func writeAssetError(w http.ResponseWriter, err error) {
	if errors.Is(err, asset.ErrNotFound) {
		WriteError(w, http.StatusNotFound, "asset_not_found", err.Error())
		return
	}
	WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
}

// WriteLedgerError answers a ledger error with its status; it reports
// whether there was one.
func WriteLedgerError(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ledger.ErrInvalid):
		WriteError(w, http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, ledger.ErrConflict):
		WriteError(w, http.StatusConflict, "idempotency_conflict", err.Error()+": use a new key for a new request")
	case errors.Is(err, ledger.ErrIssuanceLimit):
		// Not a 503: the ledger is up, and the same grant will be refused
		// again; the message says how much may still be granted.
		WriteError(w, http.StatusUnprocessableEntity, "issuance_limit", err.Error())
	case errors.Is(err, ledger.ErrNotFound):
		WriteError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, ledger.ErrNotOwned):
		WriteError(w, http.StatusConflict, "not_owned", err.Error())
	case errors.Is(err, ledger.ErrNotOwner):
		WriteError(w, http.StatusForbidden, "not_owner", err.Error())
	case errors.Is(err, ledger.ErrOwned):
		WriteError(w, http.StatusConflict, "owned", err.Error())
	case errors.Is(err, ledger.ErrNotReplicated):
		// Applied on the master, not yet on enough replicas: a retry with
		// the same Idempotency-Key applies nothing twice.
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "not_replicated", err.Error()+": send the same request again (same Idempotency-Key)")
	default:
		WriteError(w, http.StatusServiceUnavailable, "ledger_unavailable", err.Error())
	}
	return true
}

// JSONBodyMax is the largest JSON request body DecodeJSON reads.
const JSONBodyMax = 64 << 10

// ErrBodyTooLarge: a JSON request body is over JSONBodyMax (answer 413).
var ErrBodyTooLarge = errors.New("the body is too large")

// DecodeJSON reads a small JSON object body strictly: unknown fields,
// anything but whitespace after the value and bodies over JSONBodyMax are
// errors that say so (ErrBodyTooLarge for the last). It reads the whole
// body, up to one byte past the limit, before it decodes: checking only
// what a limited reader lets through once missed garbage after 5 MB of
// spaces.
func DecodeJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, JSONBodyMax+1))
	if err != nil {
		return fmt.Errorf("the body could not be read: %w", err)
	}
	if len(body) > JSONBodyMax {
		return fmt.Errorf("%w: the limit is %d KiB; send a small JSON object", ErrBodyTooLarge, JSONBodyMax>>10)
	}
	return decodeJSON(body, v)
}

func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimLeft(body, jsonSpace)) == 0 {
		return errors.New("the body is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("the body is not the expected JSON object: %v", err)
	}
	end := dec.InputOffset()
	if rest := bytes.TrimLeft(body[end:], jsonSpace); len(rest) > 0 {
		return fmt.Errorf("the body has data after the JSON value (at byte %d): send one JSON object and nothing else", len(body)-len(rest))
	}
	return nil
}

// jsonSpace is JSON's whitespace (RFC 8259), and nothing more.
const jsonSpace = " \t\r\n"

// WriteDecodeError answers a DecodeJSON error: 413 too_large for a body
// over the limit, else 400 bad_json with hint (what to send).
func WriteDecodeError(w http.ResponseWriter, err error, hint string) {
	if errors.Is(err, ErrBodyTooLarge) {
		WriteError(w, http.StatusRequestEntityTooLarge, "too_large", err.Error())
		return
	}
	WriteError(w, http.StatusBadRequest, "bad_json", err.Error()+"; "+hint)
}

// ParsePriceCredits reads the credits of a price, a listing or a purchase:
// a whole number from 0 (free) to ledger.CreditsMax, as a JSON number (not
// a string, not a fraction).
func ParsePriceCredits(raw json.RawMessage) (int64, error) {
	n := string(raw)
	if n == "" || n == "null" {
		return 0, errors.New("credits is missing")
	}
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("credits %s is not a whole number from 0 (free) to %d", n, int64(ledger.CreditsMax))
	}
	if err := ledger.CheckPrice(v); err != nil {
		return 0, err
	}
	return v, nil
}

// ParseCredits reads the credits of a grant: a whole, positive number, as
// a JSON number (not a string, not a fraction).
func ParseCredits(raw json.RawMessage) (int64, error) {
	n := string(raw)
	if n == "" || n == "null" {
		return 0, errors.New("credits is missing")
	}
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("credits %s is not a whole number from 1 to %d", n, int64(ledger.CreditsMax))
	}
	if err := ledger.CheckCredits(v); err != nil {
		return 0, err
	}
	return v, nil
}

// postPurchase: the Idempotency-Key header is the purchase ID; the body is
// {"asset_id", "buyer_id", "credits"} (read by DecodeJSON, credits from
// 0 (free) to ledger.CreditsMax by ParsePriceCredits). The buyer is
// the caller's (Caller.Buyer): a bound token buys as its account
// (buyer_id may be left out; another one is 403 wrong_buyer), a broker or
// admin names it (400 buyer_required without), anyone else may not buy
// (403 not_permitted). A new or pending purchase answers 202;
// a repeat of a finished one answers 200 with its stored result; the same ID
// with other parameters 409.
func postPurchase(p Purchases) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Idempotency-Key")
		if id == "" {
			WriteError(w, http.StatusBadRequest, "idempotency_key_required", "send an Idempotency-Key header: it is the purchase ID, so a retried purchase buys once")
			return
		}
		var body struct {
			AssetID string          `json:"asset_id"`
			BuyerID string          `json:"buyer_id"`
			Credits json.RawMessage `json:"credits"`
		}
		if err := DecodeJSON(r, &body); err != nil {
			WriteDecodeError(w, err, `send {"asset_id": "...", "buyer_id": "...", "credits": N}`)
			return
		}
		caller, _ := CallerOf(r.Context())
		buyer, err := caller.Buyer(body.BuyerID)
		switch {
		case errors.Is(err, ErrWrongBuyer):
			WriteError(w, http.StatusForbidden, "wrong_buyer", err.Error())
			return
		case errors.Is(err, ErrBuyerRequired):
			WriteError(w, http.StatusBadRequest, "buyer_required", err.Error())
			return
		case err != nil:
			WriteError(w, http.StatusForbidden, "not_permitted", err.Error())
			return
		}
		credits, err := ParsePriceCredits(body.Credits)
		if err != nil {
			WriteError(w, http.StatusBadRequest, "bad_credits", err.Error())
			return
		}
		req := ledger.PurchaseRequest{PurchaseID: id, AssetID: body.AssetID, BuyerID: buyer, Credits: credits}
		res, err := p.Submit(r.Context(), req)
		if errors.Is(err, ledger.ErrConflict) && caller.Account != "" {
			// The stored parameters may be another account's purchase: a
			// bound token learns only that its key is taken.
			WriteError(w, http.StatusConflict, "idempotency_conflict", "this Idempotency-Key was used for another purchase: use a new key for a new request")
			return
		}
		if errors.Is(err, ErrQueueUnavailable) {
			WriteError(w, http.StatusServiceUnavailable, "queue_unavailable", err.Error())
			return
		}
		if WriteLedgerError(w, err) {
			return
		}
		if res.Status != ledger.StatusPending {
			w.Header().Set("Idempotent-Replayed", "true")
			WriteJSON(w, http.StatusOK, res)
			return
		}
		status := "/v1/purchases/" + url.PathEscape(id)
		w.Header().Set("Location", status)
		WriteJSON(w, http.StatusAccepted, PurchaseAccepted{PurchaseResult: res, TaskID: p.TaskID(id), StatusURL: status})
	}
}
