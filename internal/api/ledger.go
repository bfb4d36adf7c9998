package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/idem"
	"github.com/dab-assets/dab/internal/ledger"
)

// RegisterLedger adds the account, price and purchase-status endpoints.
// (Creating purchases queues tasks, so that route belongs to the intake.)
func RegisterLedger(s *Server, led *ledger.Store, assets *asset.Store) {
	s.HandleFunc(http.MethodPost, "/v1/assets/{id}/price", ScopeAdmin, func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Credits json.RawMessage `json:"credits"`
		}
		if err := DecodeJSON(r, &body); err != nil {
			WriteError(w, http.StatusBadRequest, "bad_json", err.Error()+`; send {"credits": N} (0 clears the price)`)
			return
		}
		n, err := strconv.ParseInt(string(body.Credits), 10, 64)
		if err != nil || n < 0 || n > ledger.MaxCredits {
			WriteError(w, http.StatusBadRequest, "bad_credits", "credits must be a whole number from 0 (no price) to "+strconv.FormatInt(ledger.MaxCredits, 10))
			return
		}
		rec, err := assets.SetPrice(r.Context(), r.PathValue("id"), n)
		if errors.Is(err, asset.ErrNotFound) {
			WriteError(w, http.StatusNotFound, "asset_not_found", err.Error())
			return
		}
		if err != nil {
			WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
			return
		}
		WriteJSON(w, http.StatusOK, rec)
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
			WriteError(w, http.StatusBadRequest, "bad_json", err.Error())
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
	s.HandleFunc(http.MethodGet, "/v1/accounts/{id}", ScopeRead+","+ScopePurchase, func(w http.ResponseWriter, r *http.Request) {
		recent := 20
		if v := r.URL.Query().Get("entries"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1000 {
				WriteError(w, http.StatusBadRequest, "bad_entries", "entries must be a whole number from 0 to 1000")
				return
			}
			recent = n
		}
		a, err := led.Account(r.Context(), r.PathValue("id"), recent)
		if !WriteLedgerError(w, err) {
			WriteJSON(w, http.StatusOK, a)
		}
	})
	s.HandleFunc(http.MethodGet, "/v1/purchases/{id}", ScopeRead+","+ScopePurchase, func(w http.ResponseWriter, r *http.Request) {
		p, err := led.GetPurchase(r.Context(), r.PathValue("id"))
		if !WriteLedgerError(w, err) {
			WriteJSON(w, http.StatusOK, p)
		}
	})
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
	case errors.Is(err, ledger.ErrNotFound):
		WriteError(w, http.StatusNotFound, "not_found", err.Error())
	default:
		WriteError(w, http.StatusServiceUnavailable, "ledger_unavailable", err.Error())
	}
	return true
}

// DecodeJSON reads a small JSON object body strictly: unknown fields,
// trailing data and bodies over 64 KiB are errors that say so.
func DecodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("the body is not the expected JSON object: %v", err)
	}
	if dec.More() {
		return errors.New("the body has data after the JSON object")
	}
	return nil
}

// ParseCredits reads a whole, positive number of credits: a JSON number,
// not a string, not a fraction.
func ParseCredits(raw json.RawMessage) (int64, error) {
	n := string(raw)
	if n == "" || n == "null" {
		return 0, errors.New("credits is missing")
	}
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("credits %s is not a whole number of credits", n)
	}
	if err := ledger.CheckCredits(v); err != nil {
		return 0, err
	}
	return v, nil
}
