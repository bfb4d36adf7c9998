// The console's accounts: balances, entries, grants.

package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/ledger"
)

// accountsShown is the most accounts the accounts page lists.
const accountsShown = 500

func (c *Console) accountPage(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimSpace(r.URL.Query().Get("id"))
	caller, _ := api.CallerOf(r.Context())
	if caller.Account != "" && id == "" {
		id = caller.Account // "my balance"
	}
	data := map[string]any{"ID": id, "Key": newKey(), "Mine": caller.Account != ""}
	if caller.Account != "" && id != caller.Account {
		c.render(w, r, http.StatusForbidden, "account", "Accounts", data, "this login acts for account "+caller.Account+" and sees only its balance")
		return
	}
	if id != "" {
		a, err := c.d.Ledger.Account(r.Context(), id, 50)
		if err != nil {
			c.render(w, r, http.StatusBadRequest, "account", "Accounts", data, err.Error())
			return
		}
		data["Account"] = a
	}
	data["CanGrant"] = caller.Has(api.ScopeAdmin)
	if caller.Account == "" {
		// Operators see who has credits; a bound login only its own.
		list, more, err := c.d.Ledger.Balances(r.Context(), accountsShown)
		if err != nil {
			c.render(w, r, http.StatusServiceUnavailable, "account", "Accounts", data, err.Error())
			return
		}
		data["Accounts"], data["More"] = list, more
	}
	c.render(w, r, http.StatusOK, "account", "Accounts", data, "")
}

func (c *Console) grant(w http.ResponseWriter, r *http.Request) {
	if err := c.parseForm(w, r); err != nil {
		c.render(w, r, formStatus(err), "message", "Bad form", nil, err.Error())
		return
	}
	id := r.PathValue("id")
	n, err := strconv.ParseInt(strings.TrimSpace(r.PostForm.Get("credits")), 10, 64)
	if err == nil {
		_, err = c.d.Ledger.Grant(r.Context(), r.PostForm.Get("key"), id, n)
	}
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, ledger.ErrIssuanceLimit) {
			status = http.StatusUnprocessableEntity
		}
		c.render(w, r, status, "message", "Grant refused", nil, err.Error())
		return
	}
	http.Redirect(w, r, "/accounts?id="+url.QueryEscape(id)+"&flash="+url.QueryEscape(fmt.Sprintf("granted %d %s", n, pluralCredits(n))), http.StatusSeeOther)
}
