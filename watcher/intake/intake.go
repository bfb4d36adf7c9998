package intake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/idem"
	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/plugin"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/worker/task"
)

// Defaults and bounds of Config; internal/config's settings state the same
// values (cmd/dab's defaults test keeps them in step).
const (
	MaxBytesDefault      int64 = 5 << 30
	MaxConcurrentDefault       = 16
	IdleTimeoutDefault         = 60 * time.Second
	// TusExpiryDefault gives a resumable upload a day to come back.
	TusExpiryDefault = 24 * time.Hour
)

// Config tunes the HTTP intake.
type Config struct {
	// Plugins are the registered asset types (required): the registry
	// answers which types exist and names them when one does not.
	Plugins *plugin.Registry
	// MaxBytes is the largest accepted file (default MaxBytesDefault).
	MaxBytes int64
	// MaxConcurrent bounds uploads in progress; more are answered 503
	// (default MaxConcurrentDefault).
	MaxConcurrent int
	// IdleTimeout ends an upload whose client sends nothing for this long
	// (default IdleTimeoutDefault).
	IdleTimeout time.Duration
	// MinRate is the slowest an upload body may arrive, in bytes per second,
	// judged over MinRateWindow; 0 means no minimum.
	MinRate int64
	// MinRateWindow is the span the rate is judged over (default
	// MinRateWindowDefault).
	MinRateWindow time.Duration
	// MinFreeBytes is kept free on the spool's disk: an upload that would
	// leave less is refused (507) and /readyz reports not ready; 0 means no
	// floor.
	MinFreeBytes int64
	// TusDir holds resumable uploads in progress (required for /v1/uploads/).
	TusDir string
	// TusExpiry removes resumable uploads that received nothing for this
	// long (default TusExpiryDefault).
	TusExpiry time.Duration
	Logger    *slog.Logger
	// Queue receives the upload tasks (task.UploadQueue of this host);
	// default task.QueueUploads.
	Queue string
}

// Enqueuer is the part of *asynq.Client the intake uses.
type Enqueuer = task.Enqueuer

// Intake takes files over HTTP into the spool and queues their upload. It
// validates names with the same code as the drop folder.
type Intake struct {
	cfg   Config
	spool *spool.Spool
	queue Enqueuer
	idem  *idem.Store
	slots chan struct{}
	log   *slog.Logger
	tus   tusStore
	// spaceMu guards reserved: the disk space promised to uploads in
	// progress and not yet written (see space.go).
	spaceMu  sync.Mutex
	reserved int64
}

// New builds the intake.
func New(cfg Config, sp *spool.Spool, queue Enqueuer, keys *idem.Store) (*Intake, error) {
	if cfg.Plugins == nil || sp == nil || queue == nil || keys == nil {
		return nil, errors.New("intake: Plugins, spool, queue and idempotency store are required")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = MaxBytesDefault
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = MaxConcurrentDefault
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = IdleTimeoutDefault
	}
	if cfg.MinRateWindow <= 0 {
		cfg.MinRateWindow = MinRateWindowDefault
	}
	if cfg.TusExpiry <= 0 {
		cfg.TusExpiry = TusExpiryDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Queue == "" {
		cfg.Queue = task.QueueUploads
	}
	in := &Intake{cfg: cfg, spool: sp, queue: queue, idem: keys,
		slots: make(chan struct{}, cfg.MaxConcurrent), log: cfg.Logger}
	return in, nil
}

// Register adds the upload endpoints to s.
func (in *Intake) Register(s *api.Server) error {
	s.HandleFunc(http.MethodPost, "/v1/assets", api.ScopeIngest, in.post, api.Streaming())
	s.HandleFunc(http.MethodPut, "/v1/assets/{type}/{path...}", api.ScopeIngest, in.put, api.Streaming())
	return in.registerTus(s)
}

// httpError is an answer the handlers give on failure.
type httpError struct {
	status        int
	code, message string
}

func (e *httpError) Error() string { return e.message }

// Status is the HTTP status the error answers with.
func (e *httpError) Status() int { return e.status }

func badRequest(code, format string, args ...any) *httpError {
	return &httpError{http.StatusBadRequest, code, fmt.Sprintf(format, args...)}
}

func writeErr(w http.ResponseWriter, err error) {
	var he *httpError
	if errors.As(err, &he) {
		switch he.status {
		case http.StatusServiceUnavailable:
			w.Header().Set("Retry-After", "2")
		case http.StatusInsufficientStorage:
			w.Header().Set("Retry-After", "60")
		}
		api.WriteError(w, he.status, he.code, he.message)
		return
	}
	api.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
}

// begin takes an upload slot and checks the declared size and the free
// space. The returned reader counts bytes (413 past MaxBytes), keeps the
// connection's read deadline a little ahead while data flows and stops a
// transfer slower than MinRate.
func (in *Intake) begin(w http.ResponseWriter, r *http.Request, slack int64) (io.Reader, func(), error) {
	release, err := in.takeSlot()
	if err != nil {
		return nil, nil, err
	}
	if r.ContentLength > in.cfg.MaxBytes+slack {
		release()
		return nil, nil, in.tooLarge()
	}
	space, err := in.reserve(r.ContentLength)
	if err != nil {
		release()
		return nil, nil, err
	}
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{})
	body := &bodyReader{ReadCloser: http.MaxBytesReader(w, r.Body, in.cfg.MaxBytes+slack), rc: rc, idle: in.cfg.IdleTimeout,
		rate: in.newRateCheck(), space: space, fail: func(he *httpError) error { return he }}
	return body, func() { space.release(); release() }, nil
}

// takeSlot reserves one of the MaxConcurrent upload slots; every intake
// (form, PUT, tus) shares them.
func (in *Intake) takeSlot() (func(), error) {
	select {
	case in.slots <- struct{}{}:
		return func() { <-in.slots }, nil
	default:
		return nil, &httpError{http.StatusServiceUnavailable, "busy", fmt.Sprintf("%d uploads are in progress, the most this server takes at once (DAB_MAX_CONCURRENT_UPLOADS): retry shortly", in.cfg.MaxConcurrent)}
	}
}

func (in *Intake) tooLarge() *httpError {
	return &httpError{http.StatusRequestEntityTooLarge, "too_large",
		fmt.Sprintf("the file is larger than this server accepts (DAB_MAX_UPLOAD_BYTES = %d bytes)", in.cfg.MaxBytes)}
}

// spoolWriteError marks a failure to write the spool (the server's side),
// as opposed to a failure to read the request (the client's).
type spoolWriteError struct{ err error }

func (e *spoolWriteError) Error() string { return e.err.Error() }
func (e *spoolWriteError) Unwrap() error { return e.err }

type spoolSink struct{ w io.Writer }

func (s spoolSink) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		err = &spoolWriteError{err}
	}
	return n, err
}

// spoolBody streams r into a spool writer, refusing more than MaxBytes.
func (in *Intake) spoolBody(r io.Reader) (*spool.Writer, error) {
	sw, err := in.spool.Create()
	if err != nil {
		return nil, in.serverError("spool_create", err)
	}
	_, err = io.Copy(spoolSink{sw}, io.LimitReader(r, in.cfg.MaxBytes+1))
	var (
		mbe *http.MaxBytesError
		he  *httpError
		swe *spoolWriteError
	)
	switch {
	case err == nil && sw.Written() <= in.cfg.MaxBytes:
		return sw, nil
	case errors.As(err, &mbe) || sw.Written() > in.cfg.MaxBytes:
		err = in.tooLarge()
	case errors.As(err, &he):
	case errors.As(err, &swe):
		err = in.serverError("spool_write", swe.err)
	default:
		err = &httpError{http.StatusBadRequest, "interrupted", "the upload was cut off before its end (" + err.Error() + "): nothing was kept, send it again"}
	}
	sw.Abort()
	return nil, err
}

// serverError turns a failure on the server's side into an answer that
// names the cause but not the server's paths; the log has the detail.
func (in *Intake) serverError(step string, err error) *httpError {
	in.log.Error("intake.failed", "step", step, "error", err.Error())
	if spool.IsNoSpace(err) {
		return errNoSpace
	}
	return &httpError{http.StatusInternalServerError, "internal", "the server could not keep the upload (" + step + "): nothing was kept; retry, and tell the operators if it goes on (the server log has the details)"}
}

// checkType refuses a type the plugin registry does not know.
func (in *Intake) checkType(typ string) error {
	if typ == "" {
		typ = plugin.DefaultType
	}
	if err := in.cfg.Plugins.CheckType(typ); err != nil {
		return badRequest("unknown_type", "%v", strings.TrimPrefix(err.Error(), naming.ErrInvalid.Error()+": "))
	}
	return nil
}

// checkName refuses an unknown type or a name the spool would refuse before
// any byte is read (PUT and tus know the name up front; the spool checks it
// again when it commits).
func (in *Intake) checkName(typ, p string) error {
	if err := in.checkType(typ); err != nil {
		return err
	}
	if err := spool.CheckInput(spool.Input{Type: typ, Path: p}); err != nil {
		return badRequest("bad_name", "%v", err)
	}
	return nil
}

// parseMetadata reads a JSON object; values that are not strings are kept
// as their JSON text.
func parseMetadata(raw string) (map[string]string, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &obj); err != nil || obj == nil {
		return nil, badRequest("bad_metadata", "metadata must be a JSON object, such as {\"price\": \"10\"}")
	}
	md := make(map[string]string, len(obj))
	for k, v := range obj {
		if err := naming.CheckMetadataKey(k); err != nil {
			return nil, badRequest("bad_metadata", "%v", err)
		}
		var s string
		if json.Unmarshal(v, &s) == nil {
			md[k] = s
		} else {
			md[k] = string(v)
		}
		if k == asset.PriceMetadata {
			if _, err := asset.ParsePrice(md[k]); err != nil {
				return nil, badRequest("bad_price", "%v", err)
			}
		}
	}
	// The metadata travels on the S3 object (for `dab reconcile`): refuse
	// now what S3 would refuse at upload.
	if err := storage.MetadataFits(md); err != nil {
		return nil, badRequest("metadata_too_large", "%v", err)
	}
	return md, nil
}

// post takes a multipart form: file, type (default generic), optional name
// (the file's path below the type folder) and metadata (a JSON object). The
// fields may come in any order; the file streams into the spool as it
// arrives.
func (in *Intake) post(w http.ResponseWriter, r *http.Request) {
	answer, replayed, err := in.receiveForm(w, r)
	writeAccepted(w, answer, replayed, err)
}

// ReceiveForm takes an upload form as POST /v1/assets does and returns the
// answer; the console's upload page uses it.
func (in *Intake) ReceiveForm(w http.ResponseWriter, r *http.Request) (api.Accepted, error) {
	answer, _, err := in.receiveForm(w, r)
	if err != nil {
		return api.Accepted{}, err
	}
	var acc api.Accepted
	return acc, json.Unmarshal(answer, &acc)
}

func (in *Intake) receiveForm(w http.ResponseWriter, r *http.Request) ([]byte, bool, error) {
	body, release, err := in.begin(w, r, 1<<20)
	if err != nil {
		return nil, false, err
	}
	defer release()
	r.Body = io.NopCloser(body)
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, false, badRequest("not_multipart", "send multipart/form-data with a file field (or PUT the raw bytes to /v1/assets/{type}/{path})")
	}
	var (
		sw       *spool.Writer
		filename string
		fields   = map[string]string{}
	)
	defer func() {
		if sw != nil {
			sw.Abort()
		}
	}()
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, false, in.tooLarge()
			}
			return nil, false, badRequest("bad_form", "the form is malformed or was cut off: %v", err)
		}
		name := part.FormName()
		switch name {
		case "file":
			if sw != nil {
				return nil, false, badRequest("bad_form", "send one file per request")
			}
			filename = path.Base(strings.ReplaceAll(part.FileName(), `\`, "/"))
			if sw, err = in.spoolBody(part); err != nil {
				return nil, false, err
			}
		case "type", "name", "metadata":
			b, err := io.ReadAll(io.LimitReader(part, 64<<10+1))
			if err != nil || len(b) > 64<<10 {
				return nil, false, badRequest("bad_form", "field %q is longer than 64 KiB or was cut off", name)
			}
			fields[name] = string(b)
		default:
			io.Copy(io.Discard, io.LimitReader(part, 64<<10))
		}
	}
	if sw == nil || (filename == "" && fields["name"] == "" && sw.Written() == 0) {
		return nil, false, badRequest("no_file", "the form has no file: choose one")
	}
	name := strings.TrimSpace(fields["name"])
	if name == "" {
		name = filename
	}
	if name == "" || name == "." || name == "/" {
		return nil, false, badRequest("bad_name", "the file has no name: give a filename or a name field")
	}
	md, err := parseMetadata(fields["metadata"])
	if err != nil {
		return nil, false, err
	}
	typ := fields["type"]
	if typ == "" {
		typ = plugin.DefaultType
	}
	if err := in.checkType(typ); err != nil {
		return nil, false, err
	}
	own := sw
	sw = nil
	return in.accept(r, own, spool.Input{Type: typ, Path: name, Metadata: md, Source: "http"})
}

// put takes the raw body as the file at {type}/{path}; metadata may come in
// the Dab-Metadata header as a JSON object.
func (in *Intake) put(w http.ResponseWriter, r *http.Request) {
	typ, p := r.PathValue("type"), r.PathValue("path")
	if err := in.checkName(typ, p); err != nil {
		writeErr(w, err)
		return
	}
	md, err := parseMetadata(r.Header.Get("Dab-Metadata"))
	if err != nil {
		writeErr(w, err)
		return
	}
	body, release, err := in.begin(w, r, 0)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer release()
	sw, err := in.spoolBody(body)
	if err != nil {
		writeErr(w, err)
		return
	}
	in.finish(w, r, sw, spool.Input{Type: typ, Path: p, Metadata: md, Source: "http"})
}

// finish answers an upload: it commits, applies the idempotency key and
// queues (see accept).
func (in *Intake) finish(w http.ResponseWriter, r *http.Request, sw *spool.Writer, input spool.Input) {
	answer, replayed, err := in.accept(r, sw, input)
	writeAccepted(w, answer, replayed, err)
}

func writeAccepted(w http.ResponseWriter, answer []byte, replayed bool, err error) {
	if err != nil {
		writeErr(w, err)
		return
	}
	var acc api.Accepted
	json.Unmarshal(answer, &acc)
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", acc.StatusURL)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	w.Write(answer)
}

// accept commits the spooled bytes, applies the idempotency key and queues
// the upload. It owns sw. It returns the answer's exact bytes (stored with
// an idempotency key, so a replay is byte-for-byte the first answer).
func (in *Intake) accept(r *http.Request, sw *spool.Writer, input spool.Input) ([]byte, bool, error) {
	// The spool validates the name (the one place that does); its errors
	// become 400 bad_name here.
	m, err := sw.Commit(input)
	if err != nil {
		sw.Abort()
		if errors.Is(err, naming.ErrInvalid) {
			return nil, false, badRequest("bad_name", "%v", err)
		}
		return nil, false, in.serverError("spool_commit", err)
	}
	acc := api.Accepted{TaskID: task.UploadTaskID(m.ID), StatusURL: "/v1/tasks/" + task.UploadTaskID(m.ID),
		SpoolID: m.ID, Type: m.Type, Key: m.Key(), Size: m.Size, SHA256: m.SHA256}
	answer, _ := json.MarshalIndent(acc, "", "  ")
	answer = append(answer, '\n')
	key := r.Header.Get("Idempotency-Key")
	if key != "" {
		if err := idem.CheckKey(key); err != nil {
			in.spool.Remove(m.ID)
			return nil, false, badRequest("bad_idempotency_key", "%v", err)
		}
		stored, fresh, err := in.idem.Claim(r.Context(), "upload", key, fingerprint(m), answer)
		switch {
		case errors.Is(err, idem.ErrConflict):
			in.spool.Remove(m.ID)
			return nil, false, &httpError{http.StatusConflict, "idempotency_conflict", "this Idempotency-Key was used for a different upload: use a new key for new content"}
		case err != nil:
			in.spool.Remove(m.ID)
			return nil, false, &httpError{http.StatusServiceUnavailable, "queue_unavailable", "cannot reach Redis: " + err.Error() + "; nothing was kept, retry"}
		case !fresh:
			in.spool.Remove(m.ID) // the first request's copy is the one being uploaded
			return stored, true, nil
		}
	}
	if _, err := task.EnqueueUpload(r.Context(), in.queue, m, in.cfg.Queue); err != nil {
		in.spool.Remove(m.ID)
		if key != "" {
			in.idem.Release(context.WithoutCancel(r.Context()), "upload", key)
		}
		return nil, false, &httpError{http.StatusServiceUnavailable, "queue_unavailable", "cannot queue the upload (Redis): " + err.Error() + "; nothing was kept, retry"}
	}
	in.log.Info("intake.queued", "task_id", acc.TaskID, "spool_id", m.ID, "key", m.Key(), "bytes", m.Size)
	return answer, false, nil
}

// fingerprint identifies an upload's parameters for idempotency keys.
func fingerprint(m *spool.Manifest) string {
	keys := make([]string, 0, len(m.Metadata))
	for k := range m.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%d", m.Type, m.Path, m.SHA256, m.Size)
	for _, k := range keys {
		fmt.Fprintf(h, "\x00%s=%s", k, m.Metadata[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}
