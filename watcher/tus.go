package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/hibiken/asynq"
	"github.com/tus/tusd/v2/pkg/filelocker"
	"github.com/tus/tusd/v2/pkg/filestore"
	tusd "github.com/tus/tusd/v2/pkg/handler"
	expslog "golang.org/x/exp/slog"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/worker/task"
)

// Resumable uploads speak tus 1.0 (tusd as a library) under /v1/uploads/.
// Partial uploads live in TusDir, next to the spool on the same filesystem;
// when the last byte arrives the file is claimed into the spool by rename and
// its upload task is queued before the final answer goes out, which carries
// the task in the Dab-Task-Id and Dab-Status-Url headers.
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
	store := filestore.New(in.cfg.TusDir)
	locker := filelocker.New(in.cfg.TusDir)
	composer := tusd.NewStoreComposer()
	store.UseIn(composer)
	locker.UseIn(composer)
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
	handler := http.StripPrefix("/v1/uploads", h)
	for _, m := range []string{http.MethodPost} {
		s.Handle(m, tusBase, api.ScopeIngest, handler, api.Streaming())
	}
	for _, m := range []string{http.MethodHead, http.MethodPatch, http.MethodDelete} {
		s.Handle(m, tusBase+"{id}", api.ScopeIngest, handler, api.Streaming())
	}
	s.Handle(http.MethodOptions, tusBase, api.ScopePublic, handler) // CORS preflight and protocol discovery
	return nil
}

// tusInput reads dab's fields from tus Upload-Metadata.
func (in *Intake) tusInput(md tusd.MetaData) (spool.Input, error) {
	typ := md["type"]
	if typ == "" {
		typ = DefaultType
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
		return tusd.NewError("ERR_"+he.code, he.message, he.status)
	}
	return tusd.NewError("ERR_INTERNAL", err.Error(), http.StatusInternalServerError)
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
	dataPath := ev.Upload.Storage["Path"]
	st, err := os.Stat(dataPath)
	if err != nil {
		return tusd.HTTPResponse{}, tusReject(fmt.Errorf("finished upload %s not found: %w", ev.Upload.ID, err))
	}
	m, err := in.spool.Claim(dataPath, input, spool.FileState{Size: st.Size(), ModTime: st.ModTime()})
	if err != nil {
		return tusd.HTTPResponse{}, tusReject(err)
	}
	if info := ev.Upload.Storage["InfoPath"]; info != "" {
		os.Remove(info)
	}
	t, err := task.NewUpload(task.UploadPayload{SpoolID: m.ID, Type: m.Type, Key: m.Key()}, asynq.Queue(in.cfg.Queue))
	if err == nil {
		_, err = in.queue.EnqueueContext(context.WithoutCancel(ev.Context), t)
	}
	if err != nil && !task.IsAlreadyQueued(err) {
		// The file is safe in the spool; the watcher queues entries without a
		// task when it starts (or an operator runs `dab watch`).
		in.log.Error("intake.enqueue_failed", "spool_id", m.ID, "key", m.Key(), "error", err.Error())
		return tusd.HTTPResponse{}, tusd.NewError("ERR_QUEUE_UNAVAILABLE",
			"the file arrived and is kept (spool entry "+m.ID+") but could not be queued: "+err.Error(), http.StatusServiceUnavailable)
	}
	id := task.UploadTaskID(m.ID)
	in.log.Info("intake.queued", "task_id", id, "spool_id", m.ID, "key", m.Key(), "bytes", m.Size, "resumable", true)
	return tusd.HTTPResponse{Header: tusd.HTTPHeader{"Dab-Task-Id": id, "Dab-Status-Url": "/v1/tasks/" + id}}, nil
}
