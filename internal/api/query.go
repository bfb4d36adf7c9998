package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/asset"
)

//go:embed openapi.json
var openAPI []byte

// QueryDeps are what the query endpoints read.
type QueryDeps struct {
	Inspector *asynq.Inspector
	// Queues are searched in order for a task ID; nil means every queue.
	Queues []string
	Assets *asset.Store
	// Checks are the readiness checks by name ("redis", "bucket").
	Checks map[string]func(context.Context) error
	// Describe reads what a task's payload and result say (the task
	// contract's task.Describe). Without it a task shows no asset and only
	// operators read tasks.
	Describe func(typeName string, payload, result []byte) TaskFacts
}

// TaskFacts is what the task contract says about a task: the asset it
// recorded, the buyer it acts for, and whether only operators (tokens bound
// to no account) may read it. Its fields are task.Facts'.
type TaskFacts struct {
	AssetID       string
	BuyerID       string
	OperatorsOnly bool
}

// facts describes info, or says it is for operators when nothing can.
func (d QueryDeps) facts(info *asynq.TaskInfo) TaskFacts {
	if d.Describe == nil {
		return TaskFacts{OperatorsOnly: true}
	}
	return d.Describe(info.Type, info.Payload, info.Result)
}

// RegisterQueries adds health, readiness, the API document, tasks and assets.
func RegisterQueries(s *Server, d QueryDeps) {
	s.HandleFunc(http.MethodGet, "/healthz", ScopePublic, func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.HandleFunc(http.MethodGet, "/readyz", ScopePublic, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		checks, status, code := map[string]string{}, "ready", http.StatusOK
		for name, check := range d.Checks {
			if err := check(ctx); err != nil {
				checks[name], status, code = err.Error(), "not ready", http.StatusServiceUnavailable
			} else {
				checks[name] = "ok"
			}
		}
		WriteJSON(w, code, map[string]any{"status": status, "checks": checks})
	})
	s.HandleFunc(http.MethodGet, "/v1/openapi.json", ScopePublic, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	})
	s.HandleFunc(http.MethodGet, "/v1/tasks/{id}", ScopeRead, d.getTask)
	s.HandleFunc(http.MethodGet, "/v1/assets", ScopeRead, d.listAssets)
	s.HandleFunc(http.MethodGet, "/v1/assets/{id}", ScopeRead, d.getAsset)
}

// Accepted is the answer to an upload: 202 with where to follow the task.
type Accepted struct {
	TaskID    string `json:"task_id"`
	StatusURL string `json:"status_url"`
	SpoolID   string `json:"spool_id"`
	Type      string `json:"type"`
	Key       string `json:"s3_key"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
}

// Task is the JSON of GET /v1/tasks/{id}.
type Task struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Queue     string          `json:"queue"`
	State     string          `json:"state"`
	Attempts  int             `json:"attempts"`
	MaxRetry  int             `json:"max_retry"`
	LastError string          `json:"last_error,omitempty"`
	AssetID   string          `json:"asset_id,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	NextRunAt *time.Time      `json:"next_run_at,omitempty"`
	DoneAt    *time.Time      `json:"completed_at,omitempty"`
}

// TaskFromInfo converts asynq's view of a task and the facts its contract
// reads from it.
func TaskFromInfo(info *asynq.TaskInfo, f TaskFacts) Task {
	// A handler that gives up wraps asynq.SkipRetry, whose text ends the
	// error: it says nothing to a reader of the task.
	lastErr := strings.TrimSuffix(info.LastErr, ": "+asynq.SkipRetry.Error())
	t := Task{ID: info.ID, Type: info.Type, Queue: info.Queue, Attempts: info.Retried, MaxRetry: info.MaxRetry, LastError: lastErr}
	switch info.State {
	case asynq.TaskStateActive:
		t.State = "active"
	case asynq.TaskStateRetry:
		t.State = "retry"
	case asynq.TaskStateArchived:
		t.State = "archived"
	case asynq.TaskStateCompleted:
		t.State = "completed"
	default: // pending, scheduled, aggregating: waiting to run
		t.State = "pending"
	}
	switch {
	case info.State == asynq.TaskStateActive || info.State == asynq.TaskStateCompleted:
		t.Attempts++ // the run in progress or the one that succeeded
	case info.State == asynq.TaskStateArchived && info.LastErr != "":
		// asynq counts retries, and archives a task that failed for good
		// without counting the run that failed (an operator who archives a
		// retrying task by hand is the rare case this counts once too many).
		t.Attempts++
	}
	if len(info.Result) > 0 && json.Valid(info.Result) {
		t.Result = json.RawMessage(info.Result)
	}
	t.AssetID = f.AssetID
	if !info.NextProcessAt.IsZero() && info.State != asynq.TaskStateCompleted && info.State != asynq.TaskStateArchived {
		n := info.NextProcessAt.UTC()
		t.NextRunAt = &n
	}
	if !info.CompletedAt.IsZero() {
		c := info.CompletedAt.UTC()
		t.DoneAt = &c
	}
	return t
}

// ErrTaskNotFound: no queue holds the task (yet, or any more).
var ErrTaskNotFound = errors.New("task not found")

// FindTask looks for task id in queues (nil: every queue; upload tasks
// live in per-host queues). It is the one lookup the API and the CLI share.
func FindTask(insp *asynq.Inspector, queues []string, id string) (*asynq.TaskInfo, error) {
	if queues == nil {
		var err error
		if queues, err = insp.Queues(); err != nil {
			return nil, fmt.Errorf("read the queues: %w", err)
		}
	}
	for _, q := range queues {
		info, err := insp.GetTaskInfo(q, id)
		if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read queue %s: %w", q, err)
		}
		return info, nil
	}
	return nil, fmt.Errorf("%w: no task %q (finished tasks are kept for 7 days)", ErrTaskNotFound, id)
}

func (d QueryDeps) getTask(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	info, err := FindTask(d.Inspector, d.Queues, id)
	var f TaskFacts
	if err == nil {
		f = d.facts(info)
		if c, _ := CallerOf(r.Context()); !mayReadTask(c, f) {
			// another buyer's purchase: not found, as if it did not exist
			err = fmt.Errorf("%w: no task %q (finished tasks are kept for 7 days)", ErrTaskNotFound, id)
		}
	}
	switch {
	case errors.Is(err, ErrTaskNotFound):
		WriteError(w, http.StatusNotFound, "task_not_found", strings.TrimPrefix(err.Error(), ErrTaskNotFound.Error()+": "))
	case err != nil:
		WriteError(w, http.StatusServiceUnavailable, "queue_unavailable", "cannot "+err.Error())
	default:
		t := TaskFromInfo(info, f)
		if c, _ := CallerOf(r.Context()); !c.Has(ScopeAdmin) {
			t.LastError = HidePaths(t.LastError)
		}
		WriteJSON(w, http.StatusOK, t)
	}
}

// serverPath is an absolute path in an error message.
var serverPath = regexp.MustCompile(`(^|[\s(:'"=])/[^\s'":,;)]+`)

// HidePaths shortens the server's absolute paths in a message to their
// last element ("…/x.bin"): where dab keeps its spool and failed files is
// the operator's to know, not every reader's. The file's name stays.
func HidePaths(msg string) string {
	return serverPath.ReplaceAllStringFunc(msg, func(m string) string {
		lead := ""
		if m[0] != '/' {
			lead, m = m[:1], m[1:]
		}
		if strings.HasPrefix(m, "//") {
			return lead + m // the rest of a URL (s3://, https://), not a path
		}
		return lead + "…/" + path.Base(m)
	})
}

// mayReadTask: a purchase (a task that names a buyer) is readable by a
// token bound to another account no more than through /v1/purchases: its
// parameters and result (a balance, in a rejection) are the buyer's. A task
// for operators only (a webhook delivery, whose event may be any account's
// and whose last error quotes the receiver) is not readable by a bound
// token at all.
func mayReadTask(c Caller, f TaskFacts) bool {
	switch {
	case c.Account == "":
		return true
	case f.OperatorsOnly:
		return false
	}
	return f.BuyerID == "" || f.BuyerID == c.Account
}

func (d QueryDeps) listAssets(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := asset.ListLimitDefault
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > asset.ListLimitMax {
			WriteError(w, http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit must be a whole number from 1 to %d", asset.ListLimitMax))
			return
		}
		limit = n
	}
	page, err := d.Assets.List(r.Context(), asset.ListOptions{Type: q.Get("type"), Cursor: q.Get("cursor"), Limit: limit})
	if errors.Is(err, asset.ErrBadCursor) {
		WriteError(w, http.StatusBadRequest, "bad_cursor", "cursor must be a next_cursor from an earlier page")
		return
	}
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	WriteJSON(w, http.StatusOK, page)
}

func (d QueryDeps) getAsset(w http.ResponseWriter, r *http.Request) {
	rec, err := d.Assets.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, asset.ErrNotFound) {
		WriteError(w, http.StatusNotFound, "asset_not_found", "no asset "+strconv.Quote(r.PathValue("id")))
		return
	}
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	WriteJSON(w, http.StatusOK, rec)
}
