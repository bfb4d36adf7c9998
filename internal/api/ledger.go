package api

import (
	"bytes"
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
			WriteDecodeError(w, err, `send {"credits": N} (0 clears the price)`)
			return
		}
		n, err := strconv.ParseInt(string(body.Credits), 10, 64)
		if err != nil || n < 0 || n > ledger.CreditsMax {
			WriteError(w, http.StatusBadRequest, "bad_credits", "credits must be a whole number from 0 (no price) to "+strconv.FormatInt(ledger.CreditsMax, 10))
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
	case errors.Is(err, ledger.ErrIssuanceLimit):
		// Not a 503: the ledger is up, and the same grant will be refused
		// again; the message says how much may still be granted.
		WriteError(w, http.StatusUnprocessableEntity, "issuance_limit", err.Error())
	case errors.Is(err, ledger.ErrNotFound):
		WriteError(w, http.StatusNotFound, "not_found", err.Error())
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

// ParseCredits reads a whole, positive number of credits: a JSON number,
// not a string, not a fraction.
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
