package intake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	tusd "github.com/tus/tusd/v2/pkg/handler"
	expslog "golang.org/x/exp/slog"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/plugin"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/worker/task"
)

// Resumable uploads speak tus 1.0 (tusd as a library) under /v1/uploads/.
// Partial uploads live in TusDir, next to the spool on the same filesystem;
// when the last byte arrives the file is claimed into the spool by rename and
// its upload task is queued before the final answer goes out, which carries
// the task in the Dab-Task-Id and Dab-Status-Url headers, and the spool
// entry, S3 key and SHA-256 in Dab-Spool-Id, Dab-S3-Key and Dab-Sha256 (what
// a one-request upload answers in its body).
//
// Upload-Metadata: filename (required; may hold folders below the type
// folder), type (default generic), metadata (a JSON object).

const tusBase = "/v1/uploads/"

func (in *Intake) registerTus(s *api.Server) error {
	if in.cfg.TusDir == "" {
		return errors.New("intake: TusDir is required for resumable uploads")
	}
	if err := os.MkdirAll(in.cfg.TusDir, 0o750); err != nil {
		return fmt.Errorf("intake: %w", err)
	}
	store := newTusStore(in.cfg.TusDir, in.log)
	composer := tusd.NewStoreComposer()
	store.useIn(composer)
	h, err := tusd.NewHandler(tusd.Config{
		BasePath:             tusBase,
		StoreComposer:        composer,
		MaxSize:              in.cfg.MaxBytes,
		DisableDownload:      true,
		DisableConcatenation: true,
		// tusd logs every request through golang.org/x/exp/slog; dab's own
		// access log and intake events say what matters.
		Logger:                    expslog.New(expslog.NewTextHandler(io.Discard, nil)),
		PreUploadCreateCallback:   in.tusCreate,
		PreFinishResponseCallback: in.tusFinish,
		NetworkTimeout:            in.cfg.IdleTimeout,
	})
	if err != nil {
		return fmt.Errorf("intake: tus: %w", err)
	}
	in.tus = store
	handler := in.tusGuard(http.StripPrefix("/v1/uploads", h))
	s.Handle(http.MethodPost, tusBase+"{$}", api.ScopeIngest, handler, api.Streaming())
	for _, m := range []string{http.MethodHead, http.MethodPatch, http.MethodDelete} {
		s.Handle(m, tusBase+"{id}", api.ScopeIngest, handler, api.Streaming())
	}
	s.Handle(http.MethodOptions, tusBase, api.ScopePublic, handler) // CORS preflight and protocol discovery
	return nil
}

// tusGuard checks what tusd would take on trust, before it sees the
// request: the upload ID in the path must be exactly the form the store
// creates (tusd joins the decoded ID to its folder, so "..%2F" would reach
// outside it), a method override (which tusd honours on any POST) is
// refused, and bodies take an upload slot and must keep a minimum rate.
func (in *Intake) tusGuard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-HTTP-Method-Override") != "" {
			api.WriteError(w, http.StatusBadRequest, "method_override",
				"X-HTTP-Method-Override is not accepted: send PATCH, HEAD or DELETE as the real method")
			return
		}
		id := strings.TrimPrefix(r.URL.Path, tusBase)
		switch {
		case id == "" && (r.Method == http.MethodPost || r.Method == http.MethodOptions):
		case id != "" && validTusID(id):
		default:
			api.WriteError(w, http.StatusNotFound, "not_found",
				"no such upload: use the Location that creating the upload (POST "+tusBase+") answered")
			return
		}
		if r.Method != http.MethodPost && r.Method != http.MethodPatch {
			h.ServeHTTP(w, r)
			return
		}
		release, err := in.takeSlot()
		if err != nil {
			writeErr(w, err)
			return
		}
		defer release()
		space, err := in.reserve(in.tusRemaining(r, id))
		if err != nil {
			writeErr(w, err)
			return
		}
		defer space.release()
		rc := http.NewResponseController(w)
		body := &bodyReader{ReadCloser: r.Body, rc: rc, idle: in.cfg.IdleTimeout, rate: in.newRateCheck(), space: space, fail: tusError}
		r.Body = body
		h.ServeHTTP(w, r)
		if body.stopped {
			// tusd moved the deadline on after the last read; end the
			// connection's reading so the trickle is not drained.
			rc.SetReadDeadline(time.Now())
		}
	})
}

// tusRemaining is what a tus request will write: the whole file at
// creation (Upload-Length), the rest of the file for a PATCH (the upload's
// length less the offset it resumes from); -1 when unknown.
func (in *Intake) tusRemaining(r *http.Request, id string) int64 {
	if r.Method == http.MethodPost {
		if n, err := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64); err == nil {
			return n
		}
		return -1
	}
	offset, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	if err != nil {
		return -1
	}
	up, err := in.tus.GetUpload(r.Context(), id)
	if err != nil {
		return -1 // tusd answers for the missing upload
	}
	info, err := up.GetInfo(r.Context())
	if err != nil || info.SizeIsDeferred {
		return -1
	}
	return max(info.Size-offset, 0)
}

// tusError answers dab's error the way tusd answers, so tus clients read
// it (and keep what arrived for a resume).
func tusError(he *httpError) error {
	e := tusd.NewError("ERR_"+strings.ToUpper(he.code), he.message, he.status)
	switch he.status {
	case http.StatusInsufficientStorage:
		e.HTTPResponse.Header["Retry-After"] = "60"
		e.Message = "the server's upload disk is full: the bytes it received are kept; resume the upload later (operators: free space on the spool's disk, see /readyz)"
		e.HTTPResponse.Body = e.ErrorCode + ": " + e.Message + "\n"
	case http.StatusServiceUnavailable:
		e.HTTPResponse.Header["Retry-After"] = "2"
	}
	return e
}

// tusInput reads dab's fields from tus Upload-Metadata.
func (in *Intake) tusInput(md tusd.MetaData) (spool.Input, error) {
	typ := md["type"]
	if typ == "" {
		typ = plugin.DefaultType
	}
	name := md["filename"]
	if name == "" {
		return spool.Input{}, badRequest("bad_name", "Upload-Metadata needs a filename")
	}
	if err := in.checkName(typ, name); err != nil {
		return spool.Input{}, err
	}
	meta, err := parseMetadata(md["metadata"])
	if err != nil {
		return spool.Input{}, err
	}
	return spool.Input{Type: typ, Path: name, Metadata: meta, Source: "http"}, nil
}

func tusReject(err error) error {
	var he *httpError
	if errors.As(err, &he) {
		return tusError(he)
	}
	return tusd.NewError("ERR_INTERNAL", "the server could not take the upload; the server log has the details", http.StatusInternalServerError)
}

// tusCreate refuses a bad type or name before any byte is sent.
func (in *Intake) tusCreate(ev tusd.HookEvent) (tusd.HTTPResponse, tusd.FileInfoChanges, error) {
	if _, err := in.tusInput(ev.Upload.MetaData); err != nil {
		return tusd.HTTPResponse{}, tusd.FileInfoChanges{}, tusReject(err)
	}
	if ev.Upload.SizeIsDeferred {
		return tusd.HTTPResponse{}, tusd.FileInfoChanges{}, tusd.NewError("ERR_SIZE_REQUIRED", "send Upload-Length: dab needs the size up front", http.StatusBadRequest)
	}
	return tusd.HTTPResponse{}, tusd.FileInfoChanges{}, nil
}

// tusFinish claims the complete file into the spool and queues its upload.
func (in *Intake) tusFinish(ev tusd.HookEvent) (tusd.HTTPResponse, error) {
	input, err := in.tusInput(ev.Upload.MetaData)
	if err != nil {
		return tusd.HTTPResponse{}, tusReject(err)
	}
	// The path comes from the ID (which the store checked), not from what
	// the upload's .info says.
	dataPath := in.tus.dataPath(ev.Upload.ID)
	st, err := os.Stat(dataPath)
	if err != nil {
		return tusd.HTTPResponse{}, tusReject(in.serverError("tus_finish", err))
	}
	m, err := in.spool.Claim(dataPath, input, spool.FileState{Size: st.Size(), ModTime: st.ModTime()})
	for try := 0; errors.Is(err, spool.ErrInUse) && try < 40; try++ {
		// tusd closed the file; a child process that this process forks
		// holds a copy of every descriptor until it execs: look again.
		time.Sleep(25 * time.Millisecond)
		m, err = in.spool.Claim(dataPath, input, spool.FileState{Size: st.Size(), ModTime: st.ModTime()})
	}
	if err != nil {
		return tusd.HTTPResponse{}, tusReject(in.serverError("tus_claim", err))
	}
	os.Remove(in.tus.infoPath(ev.Upload.ID))
	if _, err := task.EnqueueUpload(context.WithoutCancel(ev.Context), in.queue, m, in.cfg.Queue); err != nil {
		// The file is safe in the spool; the watcher queues entries without a
		// task when it starts (or an operator runs `dab watch`).
		in.log.Error("intake.enqueue_failed", "spool_id", m.ID, "key", m.Key(), "error", err.Error())
		return tusd.HTTPResponse{}, tusd.NewError("ERR_QUEUE_UNAVAILABLE",
			"the file arrived and is kept (spool entry "+m.ID+") but could not be queued: "+err.Error(), http.StatusServiceUnavailable)
	}
	id := task.UploadTaskID(m.ID)
	in.log.Info("intake.queued", "task_id", id, "spool_id", m.ID, "key", m.Key(), "bytes", m.Size, "resumable", true)
	return tusd.HTTPResponse{Header: tusd.HTTPHeader{"Dab-Task-Id": id, "Dab-Status-Url": "/v1/tasks/" + id,
		"Dab-Spool-Id": m.ID, "Dab-S3-Key": m.Key(), "Dab-Sha256": m.SHA256}}, nil
}
