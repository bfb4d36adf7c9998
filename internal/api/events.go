package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/dab-assets/dab/internal/event"
)

// RegisterEvents adds GET /v1/events: the events stream, oldest first, a
// page at a time (?after=ID&limit=N; the answer's next is the after of
// the following page). An unbound read token (or admin) sees every event;
// a token bound to an account sees only the events about that account
// and the assets it owned at the time (its grants, its purchases and
// sales, its listings), so that no other account's money or ownership
// shows: an asset recorded or an upload failed is about no account and
// is never shown to it. Its pages may be empty while next moves on (at
// most event.ScanMax entries are looked at per request).
func RegisterEvents(s *Server, log *event.Log) {
	s.HandleFunc(http.MethodGet, "/v1/events", ScopeRead, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit := event.LimitDefault
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > event.LimitMax {
				WriteError(w, http.StatusBadRequest, "bad_limit", "limit must be a whole number from 1 to "+strconv.Itoa(event.LimitMax))
				return
			}
			limit = n
		}
		c, _ := CallerOf(r.Context())
		page, err := log.Read(r.Context(), event.ReadOptions{After: q.Get("after"), Limit: limit, Account: c.Account})
		if errors.Is(err, event.ErrBadCursor) {
			WriteError(w, http.StatusBadRequest, "bad_after", "after must be an event ID from an earlier page (its id, or next), or 0 for the oldest")
			return
		}
		if err != nil {
			WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
			return
		}
		WriteJSON(w, http.StatusOK, page)
	})
}
