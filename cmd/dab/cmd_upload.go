package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/apiclient"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/worker/task"
)

// metaFlag collects repeated --meta key=value flags.
type metaFlag map[string]string

func (m metaFlag) String() string { return fmt.Sprint(map[string]string(m)) }

func (m metaFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("%q is not key=value", v)
	}
	k = strings.TrimSpace(k)
	if err := naming.CheckMetadataKey(k); err != nil {
		return err
	}
	if k == asset.PriceMetadata {
		if _, err := asset.ParsePrice(val); err != nil {
			return err
		}
	}
	m[k] = val
	return nil
}

// uploadParallelism is how many files `dab upload` spools at once.
const uploadParallelism = 8

// uploadLine is what `dab upload --json` prints per file.
type uploadLine struct {
	File    string `json:"file"`
	TaskID  string `json:"task_id"`
	SpoolID string `json:"spool_id"`
	Key     string `json:"s3_key"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
	// Filled in with --wait.
	State   string          `json:"state,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	LastErr string          `json:"error,omitempty"`
}

// runUpload spools each file and queues its upload task.
func runUpload(ctx context.Context, e *env, args []string) error {
	var (
		assetType string
		folder    string
		asJSON    bool
		wait      bool
		timeout   time.Duration
		meta      = metaFlag{}
	)
	a, err := e.parse("upload", args, func(fs *flag.FlagSet) {
		fs.StringVar(&assetType, "type", "generic", "asset type (a registered plugin type: generic, cyoa)")
		fs.StringVar(&folder, "folder", "", "folder below the type folder, kept in the S3 key (for cyoa: the story)")
		fs.Var(meta, "meta", "metadata key=value for the record (repeatable)")
		fs.BoolVar(&asJSON, "json", false, "print one JSON object per file")
		fs.BoolVar(&wait, "wait", false, "wait until each upload finished and print its outcome")
		fs.DurationVar(&timeout, "timeout", 10*time.Minute, "with --wait: how long to wait per file")
	})
	if err != nil {
		return err
	}
	if len(a.args) == 0 {
		return fmt.Errorf("%w: name at least one file: dab upload FILE... --type TYPE", errUsage)
	}
	if err := builtin.Registry().CheckType(assetType); err != nil {
		return fmt.Errorf("--type: %w", err)
	}
	// The metadata travels on the S3 object (for `dab reconcile`): refuse
	// now what S3 would refuse at upload.
	if err := storage.MetadataFits(meta); err != nil {
		return fmt.Errorf("%w: --meta: %v", errUsage, err)
	}
	var up uploader
	if a.cfg.Server != "" {
		c, err := a.apiClient()
		if err != nil {
			return err
		}
		up = &serverUploader{a: a, c: c, typ: assetType, folder: folder, meta: meta}
	} else {
		sp, err := a.spool()
		if err != nil {
			return err
		}
		rdb, err := a.connectRedis(ctx)
		if err != nil {
			return err
		}
		defer rdb.Close()
		client := a.asynqClient(rdb)
		defer client.Close()
		up = &localUploader{a: a, sp: sp, client: client, insp: asynq.NewInspectorFromRedisClient(rdb), typ: assetType, folder: folder, meta: meta}
	}

	// Spool files in parallel (each waits on fsyncs); report in the order given.
	type outcome struct {
		line *uploadLine
		err  error
	}
	outcomes := make([]outcome, len(a.args))
	parallel := uploadParallelism
	if isTerminal(a.stderr) {
		parallel = 1 // progress bars of parallel files would overwrite each other
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, file := range a.args {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			line, err := up.upload(ctx, file)
			outcomes[i] = outcome{line, err}
		}()
	}
	wg.Wait()

	var failed []string
	for i, file := range a.args {
		line, err := outcomes[i].line, outcomes[i].err
		if err == nil && wait {
			err = waitTask(ctx, up.task, line, timeout)
		}
		if err != nil {
			failed = append(failed, file)
			fmt.Fprintf(a.stderr, "dab upload: %s: %v\n", file, err)
			if line == nil {
				continue
			}
		}
		if asJSON {
			b, _ := json.Marshal(line)
			fmt.Fprintln(a.stdout, string(b))
		} else {
			fmt.Fprintf(a.stdout, "%s\t%s\t%s\t%d bytes\n", line.TaskID, line.Key, line.File, line.Size)
			if line.State != "" {
				fmt.Fprintf(a.stdout, "  %s %s%s\n", line.State, string(line.Result), line.LastErr)
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d files failed: %s", len(failed), len(a.args), strings.Join(failed, ", "))
	}
	return nil
}

// uploader is one way of putting files into the pipeline.
type uploader interface {
	upload(ctx context.Context, file string) (*uploadLine, error)
	task(ctx context.Context, id string) (api.Task, error)
}

// localUploader writes into the local spool and enqueues directly.
type localUploader struct {
	a      *app
	sp     *spool.Spool
	client *asynq.Client
	insp   *asynq.Inspector
	typ    string
	folder string
	meta   map[string]string
}

func (u *localUploader) task(_ context.Context, id string) (api.Task, error) {
	return localTask(u.insp, id)
}

func (u *localUploader) upload(ctx context.Context, file string) (*uploadLine, error) {
	a, assetType, folder := u.a, u.typ, u.folder
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s): upload files, not folders or devices", st.Mode().Type())
	}
	rel := filepath.Base(file)
	if folder != "" {
		rel = strings.Trim(folder, "/") + "/" + rel
	}
	in := spool.Input{Type: assetType, Path: rel, Metadata: u.meta, Source: "cli"}
	var bar *progressBar
	if st.Size() >= progressMin && isTerminal(a.stderr) {
		bar = newProgressBar(a.stderr, filepath.Base(file), st.Size())
		in.Progress = bar.update
	}
	m, err := u.sp.Put(io.Reader(f), in)
	if bar != nil {
		bar.done()
	}
	if err != nil {
		return nil, err
	}
	if _, err := task.EnqueueUpload(ctx, u.client, m, a.uploadQueue()); err != nil {
		// Nothing is lost: the original file is untouched; drop the copy.
		if rerr := u.sp.Remove(m.ID); rerr != nil {
			return nil, fmt.Errorf("queue upload (redis at %s): %w; the spooled copy %s could not be removed either: %v", config.RedactURL(a.cfg.RedisURL), err, m.ID, rerr)
		}
		return nil, fmt.Errorf("queue upload (redis at %s): %w; nothing was queued and the file is unchanged: try again", config.RedactURL(a.cfg.RedisURL), err)
	}
	a.log.Debug("upload.queued", "task_id", task.UploadTaskID(m.ID), "spool_id", m.ID, "key", m.Key())
	return &uploadLine{File: file, TaskID: task.UploadTaskID(m.ID), SpoolID: m.ID, Key: m.Key(), Size: m.Size, SHA256: m.SHA256}, nil
}

// waitTask polls the task until it completes or is archived.
func waitTask(ctx context.Context, get func(context.Context, string) (api.Task, error), line *uploadLine, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		t, err := get(ctx, line.TaskID)
		if err != nil && !errors.Is(err, api.ErrTaskNotFound) {
			return fmt.Errorf("follow task %s: %w", line.TaskID, err)
		}
		if err == nil {
			line.State, line.LastErr = t.State, t.LastError
			switch t.State {
			case "completed":
				line.Result, line.LastErr = t.Result, ""
				return nil
			case "archived":
				return fmt.Errorf("task %s failed for good: %s", line.TaskID, t.LastError)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("task %s still %s after %s (is a worker running? `dab work` or `dab dev`)", line.TaskID, line.State, timeout)
		case <-tick.C:
		}
	}
}

// serverUploader sends files to a dab HTTP API.
type serverUploader struct {
	a      *app
	c      *apiclient.Client
	typ    string
	folder string
	meta   map[string]string
}

func (u *serverUploader) task(ctx context.Context, id string) (api.Task, error) {
	t, err := u.c.Task(ctx, id)
	var ae *apiclient.Error
	if errors.As(err, &ae) && ae.Status == 404 {
		return t, api.ErrTaskNotFound
	}
	return t, err
}

func (u *serverUploader) upload(ctx context.Context, file string) (*uploadLine, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	rel := filepath.Base(file)
	if u.folder != "" {
		rel = strings.Trim(u.folder, "/") + "/" + rel
	}
	in := apiclient.UploadInput{File: file, Type: u.typ, Path: rel, Metadata: u.meta}
	var bar *progressBar
	if st.Size() >= progressMin && isTerminal(u.a.stderr) {
		bar = newProgressBar(u.a.stderr, filepath.Base(file), st.Size())
		in.Progress = bar.update
	}
	acc, err := u.c.Upload(ctx, in)
	if bar != nil {
		bar.done()
	}
	if err != nil {
		return nil, err
	}
	return &uploadLine{File: file, TaskID: acc.TaskID, SpoolID: acc.SpoolID,
		Key: u.typ + "/" + rel, Size: st.Size(), SHA256: acc.SHA256}, nil
}
