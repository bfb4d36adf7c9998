// The console's market: buying, listing, and what a purchase came to.

package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
)

func (c *Console) buy(w http.ResponseWriter, r *http.Request) {
	if err := c.parseForm(w, r); err != nil {
		c.render(w, r, formStatus(err), "message", "Bad form", nil, err.Error())
		return
	}
	credits, err := strconv.ParseInt(strings.TrimSpace(r.PostForm.Get("credits")), 10, 64)
	if err != nil {
		c.render(w, r, http.StatusBadRequest, "message", "Bad form", nil, "credits must be a whole number")
		return
	}
	caller, _ := api.CallerOf(r.Context())
	buyer, err := caller.Buyer(strings.TrimSpace(r.PostForm.Get("buyer")))
	if err != nil {
		status := http.StatusForbidden
		if errors.Is(err, api.ErrBuyerRequired) {
			status = http.StatusBadRequest
		}
		c.render(w, r, status, "message", "Purchase refused", nil, err.Error())
		return
	}
	req := ledger.PurchaseRequest{PurchaseID: r.PostForm.Get("key"), AssetID: r.PathValue("id"), BuyerID: buyer, Credits: credits}
	if _, err := c.d.Purchaser.Submit(r.Context(), req); err != nil {
		status := http.StatusServiceUnavailable
		switch {
		case errors.Is(err, ledger.ErrInvalid):
			status = http.StatusBadRequest
		case errors.Is(err, ledger.ErrConflict):
			// The stored purchase may be another account's: say nothing of it.
			c.render(w, r, http.StatusConflict, "message", "Purchase refused", nil,
				"this purchase ID was used for another purchase: reload the asset page for a new one")
			return
		}
		c.render(w, r, status, "message", "Purchase refused", nil, err.Error())
		return
	}
	http.Redirect(w, r, "/purchases/"+url.PathEscape(req.PurchaseID), http.StatusSeeOther)
}

// listing puts the owner's asset up for sale (credits) or takes it off
// (remove), with the same rules as the API: the owner's bound login, or
// admin for any owner.
func (c *Console) listing(w http.ResponseWriter, r *http.Request) {
	if err := c.parseForm(w, r); err != nil {
		c.render(w, r, formStatus(err), "message", "Bad form", nil, err.Error())
		return
	}
	caller, _ := api.CallerOf(r.Context())
	owner := caller.Account
	if caller.Has(api.ScopeAdmin) {
		owner = ledger.AnyOwner
	}
	by := caller.Account
	if by == "" {
		by = caller.Name
	}
	id := r.PathValue("id")
	var err error
	flash := "not for sale any more"
	if r.PostForm.Get("remove") != "" {
		_, err = c.d.Ledger.ClearListing(r.Context(), id, owner, by)
	} else {
		var n int64
		if n, err = asset.ParsePrice(strings.TrimSpace(r.PostForm.Get("credits"))); err == nil {
			_, err = c.d.Ledger.SetListing(r.Context(), id, owner, n, by)
			flash = fmt.Sprintf("listed for %d %s", n, pluralCredits(n))
		}
	}
	if err != nil {
		status := http.StatusServiceUnavailable
		switch {
		case errors.Is(err, asset.ErrBadPrice), errors.Is(err, ledger.ErrInvalid):
			status = http.StatusBadRequest
		case errors.Is(err, ledger.ErrNotOwner):
			status = http.StatusForbidden
		case errors.Is(err, ledger.ErrNotOwned):
			status = http.StatusConflict
		case errors.Is(err, ledger.ErrNotFound):
			status = http.StatusNotFound
		}
		c.render(w, r, status, "message", "Listing refused", nil, err.Error())
		return
	}
	http.Redirect(w, r, "/assets/"+url.PathEscape(id)+"?flash="+url.QueryEscape(flash), http.StatusSeeOther)
}

func (c *Console) purchasePage(w http.ResponseWriter, r *http.Request) {
	p, err := c.d.Ledger.GetPurchase(r.Context(), r.PathValue("id"))
	caller, _ := api.CallerOf(r.Context())
	if err == nil && caller.Account != "" && p.BuyerID != caller.Account {
		err = fmt.Errorf("no purchase %q of yours", r.PathValue("id")) // others' purchases are not shown, nor said to exist
	}
	if err != nil {
		c.render(w, r, http.StatusNotFound, "message", "Not found", nil, err.Error())
		return
	}
	if p.Status == ledger.StatusPending {
		w.Header().Set("Refresh", "1") // no JavaScript needed to see the result
	}
	d := map[string]any{"P": p, "AssetName": p.AssetID}
	if rec, err := c.d.Assets.Get(r.Context(), p.AssetID); err == nil {
		d["AssetName"] = rec.Name
	}
	if p.Status == ledger.StatusSucceeded {
		if a, err := c.d.Ledger.Account(r.Context(), p.BuyerID, 0); err == nil {
			d["Balance"] = a.Balance
		}
	}
	c.render(w, r, http.StatusOK, "purchase", "Purchase "+p.PurchaseID, d, "")
}

// pluralCredits is "credit" for 1, else "credits".
func pluralCredits(n int64) string {
	if n == 1 {
		return "credit"
	}
	return "credits"
}
