package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/dab-assets/dab/internal/idem"
)

// ImportRequest is the body of POST /v1/imports, with the Idempotency-Key
// header as Key.
type ImportRequest struct {
	Key      string            `json:"-"`
	Source   string            `json:"source"`
	Type     string            `json:"type"`
	Path     string            `json:"path"`
	SHA256   string            `json:"sha256,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Imports queues imports (the HTTP intake implements it).
type Imports interface {
	// Import checks req and queues its task once per key. replayed is true
	// when the key's task was queued before with the same request. Errors
	// wrap ErrBadImport (the request is wrong: 400), ErrImportRefused (the
	// source is not one dab may read: 403), ErrImportConflict (the key was
	// used for another request: 409) or ErrQueueUnavailable.
	Import(ctx context.Context, req ImportRequest) (taskID string, replayed bool, err error)
}

// Import errors callers branch on.
var (
	ErrBadImport      = errors.New("bad import request")
	ErrImportConflict = errors.New("this Idempotency-Key was used for another import: use a new key for a new request")
	// ErrImportRefused: dab may not read the source (403).
	ErrImportRefused = errors.New("import source refused")
)

// ImportAnswer is the body of a 202 (or a replayed 200).
type ImportAnswer struct {
	TaskID    string `json:"task_id"`
	StatusURL string `json:"status_url"`
}

// RegisterImports adds POST /v1/imports: bank a file that is not on a dab
// host (s3://bucket/key, or an https:// URL), for the ingest scope.
func RegisterImports(s *Server, im Imports) {
	s.HandleFunc(http.MethodPost, "/v1/imports", ScopeIngest, func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			WriteError(w, http.StatusBadRequest, "idempotency_key_required", "send an Idempotency-Key header: a retried import must not import twice")
			return
		}
		if err := idem.CheckKey(key); err != nil {
			WriteError(w, http.StatusBadRequest, "bad_idempotency_key", err.Error())
			return
		}
		var req ImportRequest
		if err := DecodeJSON(r, &req); err != nil {
			WriteDecodeError(w, err, `send {"source": "s3://bucket/key or https://...", "type": "generic", "path": "folder/name.ext", "metadata": {...}, "sha256": "..."}`)
			return
		}
		req.Key = key
		id, replayed, err := im.Import(r.Context(), req)
		switch {
		case errors.Is(err, ErrBadImport):
			WriteError(w, http.StatusBadRequest, "bad_import", err.Error())
			return
		case errors.Is(err, ErrImportRefused):
			WriteError(w, http.StatusForbidden, "import_source_refused", err.Error())
			return
		case errors.Is(err, ErrImportConflict):
			WriteError(w, http.StatusConflict, "idempotency_conflict", err.Error())
			return
		case err != nil:
			WriteError(w, http.StatusServiceUnavailable, "queue_unavailable", err.Error()+": send the same request again (same Idempotency-Key)")
			return
		}
		answer := ImportAnswer{TaskID: id, StatusURL: "/v1/tasks/" + url.PathEscape(id)}
		if replayed {
			w.Header().Set("Idempotent-Replayed", "true")
			WriteJSON(w, http.StatusOK, answer)
			return
		}
		w.Header().Set("Location", answer.StatusURL)
		WriteJSON(w, http.StatusAccepted, answer)
	})
}
