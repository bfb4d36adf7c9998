// The console's webhook pages: endpoints, deliveries, resend.

package web

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/webhook"
)

// endpoints is the configured webhook endpoints (none without Webhooks).
func (c *Console) endpoints() []webhook.Endpoint {
	if c.d.Webhooks == nil {
		return nil
	}
	return c.d.Webhooks.Endpoints()
}

// operatorsOnly refuses a login bound to an account: the webhook pages
// show every account's events.
func (c *Console) operatorsOnly(w http.ResponseWriter, r *http.Request) bool {
	if caller, _ := api.CallerOf(r.Context()); caller.Account != "" {
		c.render(w, r, http.StatusForbidden, "message", "Not allowed", nil,
			"the webhook pages show every account's events: log in with an unbound read token (or admin); this login acts for "+caller.Account+" only")
		return false
	}
	return true
}

// deliveriesShown is how many deliveries an endpoint's page lists.
const deliveriesShown = 100

type endpointRow struct {
	Endpoint                    webhook.Endpoint
	Completed, Retrying, Failed int
	Waiting                     int
	LastError                   string
}

func (c *Console) webhooksPage(w http.ResponseWriter, r *http.Request) {
	if !c.operatorsOnly(w, r) {
		return
	}
	var rows []endpointRow
	for _, e := range c.endpoints() {
		row := endpointRow{Endpoint: e}
		ds, err := c.d.Webhooks.Deliveries(r.Context(), e.ID, 1000)
		if err != nil {
			c.render(w, r, http.StatusServiceUnavailable, "message", "Unavailable", nil, err.Error())
			return
		}
		for _, d := range ds {
			switch d.State {
			case "completed":
				row.Completed++
			case "retry":
				row.Retrying++
			case "archived":
				row.Failed++
			default:
				row.Waiting++
			}
			if row.LastError == "" && d.LastError != "" {
				row.LastError = d.LastError
			}
		}
		rows = append(rows, row)
	}
	c.render(w, r, http.StatusOK, "webhooks", "Webhooks", rows, "")
}

// endpointOf finds the endpoint of /webhooks/{n}, or answers 404.
func (c *Console) endpointOf(w http.ResponseWriter, r *http.Request) (webhook.Endpoint, bool) {
	eps := c.endpoints()
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 1 || n > len(eps) {
		c.render(w, r, http.StatusNotFound, "message", "Not found", nil,
			fmt.Sprintf("no webhook endpoint %q: endpoints are numbered 1 to %d in DAB_WEBHOOKS_FILE's order", r.PathValue("n"), len(eps)))
		return webhook.Endpoint{}, false
	}
	return eps[n-1], true
}

func (c *Console) webhookPage(w http.ResponseWriter, r *http.Request) {
	if !c.operatorsOnly(w, r) {
		return
	}
	e, ok := c.endpointOf(w, r)
	if !ok {
		return
	}
	ds, err := c.d.Webhooks.Deliveries(r.Context(), e.ID, deliveriesShown)
	if err != nil {
		c.render(w, r, http.StatusServiceUnavailable, "message", "Unavailable", nil, err.Error())
		return
	}
	caller, _ := api.CallerOf(r.Context())
	c.render(w, r, http.StatusOK, "webhook", fmt.Sprintf("Webhook endpoint %d", e.N),
		map[string]any{"Endpoint": e, "Deliveries": ds, "CanResend": caller.Has(api.ScopeAdmin)}, "")
}

func (c *Console) resend(w http.ResponseWriter, r *http.Request) {
	if err := c.parseForm(w, r); err != nil {
		c.render(w, r, formStatus(err), "message", "Bad form", nil, err.Error())
		return
	}
	e, ok := c.endpointOf(w, r)
	if !ok {
		return
	}
	eventID := strings.TrimSpace(r.PostForm.Get("event"))
	taskID, err := c.d.Webhooks.Resend(r.Context(), e.ID, eventID)
	if err != nil {
		c.render(w, r, http.StatusBadRequest, "message", "Not sent again", nil, err.Error())
		return
	}
	if c.d.Logger != nil {
		caller, _ := api.CallerOf(r.Context())
		c.d.Logger.Info("webhook.resend", "endpoint", e.N, "event_id", eventID, "task_id", taskID, "by", caller.Name)
	}
	http.Redirect(w, r, fmt.Sprintf("/webhooks/%d?flash=%s", e.N, url.QueryEscape("event "+eventID+" queued again as task "+taskID)), http.StatusSeeOther)
}
