package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/apiclient"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/plugin"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/internal/redact"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/worker/task"
)

// metaFlag collects repeated --meta key=value flags.
type metaFlag map[string]string

func (m metaFlag) String() string {
	kv := make([]string, 0, len(m))
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

func (m metaFlag) Type() string { return "KEY=VALUE" }

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

// uploadParallelism is how many files `dab upload` spools at once: each
// waits on its fsyncs, which the filesystem's journal commits together
// (measured here: 2,000 files of 4 KiB spooled in 3.0 s 8 at a time, 1.6 s
// 32 at a time).
const uploadParallelism = 32

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

// uploadFlags are the flags of `dab upload`.
type uploadFlags struct {
	assetType, folder string
	asJSON, wait      bool
	timeout           time.Duration
	meta              metaFlag
}

func (c *cli) uploadCmd() *cobra.Command {
	f := uploadFlags{meta: metaFlag{}}
	cmd := &cobra.Command{
		Use:   "upload FILE... [--type TYPE] [--folder FOLDER] [--meta KEY=VALUE]... [--wait] [--json]",
		Short: "spool files and queue their upload; prints each task ID",
		Long: `Spool each file (a copy, streamed once and fsynced, under DAB_DATA_DIR) and
queue its upload: a worker on this host (dab work) uploads it to S3, runs
the type's plugin and records the asset. The command prints the task ID of
each file; a progress bar shows on a terminal for large files; --wait
follows each task to its end.

With DAB_SERVER (and DAB_TOKEN) the files go through that dab's HTTP API
instead: one request for small files, tus for files from 16 MiB, resumed
after errors and by running the same command again.`,
		Example: `  dab upload NODE_intro.png EDGE_intro_to_cave.png --type cyoa --folder forest
  dab upload report.pdf --meta price=5 --wait --json
  DAB_SERVER=https://dab.example.org DAB_TOKEN=... dab upload big.mov`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("name at least one file")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := c.app(args, roleClient)
			if err != nil {
				return err
			}
			return a.upload(cmd.Context(), f)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.assetType, "type", plugin.DefaultType, "asset `TYPE`: the plugin that reads it ("+strings.Join(builtin.Registry().Types(), ", ")+")")
	fs.StringVar(&f.folder, "folder", "", "`FOLDER` below the type folder, kept in the S3 key (for cyoa: the story)")
	fs.Var(f.meta, "meta", "`KEY=VALUE` metadata for the record (repeatable; price=N sells it for N credits)")
	fs.BoolVar(&f.wait, "wait", false, "wait until each upload finished and print its outcome")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Minute, "with --wait: how long to wait per file (a `DURATION` such as 30s or 5m)")
	fs.BoolVar(&f.asJSON, "json", false, "print one JSON object per file")
	cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(builtin.Registry().Types(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// upload spools each file and queues its upload task.
func (a *app) upload(ctx context.Context, f uploadFlags) error {
	if err := builtin.Registry().CheckType(f.assetType); err != nil {
		return usagef("--type: %w", err)
	}
	// The metadata travels on the S3 object (for `dab reconcile`): refuse
	// now what S3 would refuse at upload.
	if err := storage.MetadataFits(f.meta); err != nil {
		return usagef("--meta: %v", err)
	}
	var up uploader
	if a.cfg.Server != "" {
		c, err := a.apiClient()
		if err != nil {
			return err
		}
		up = &serverUploader{a: a, c: c, typ: f.assetType, folder: f.folder, meta: f.meta}
	} else {
		// Redis first: a file is spooled only where its task can be queued.
		rdb, err := a.connectRedis(ctx)
		if err != nil {
			return err
		}
		defer rdb.Close()
		sp, err := a.spool()
		if err != nil {
			return err
		}
		client := a.asynqClient(rdb)
		defer client.Close()
		up = &localUploader{a: a, sp: sp, client: client, tasks: localTasks(asynq.NewInspectorFromRedisClient(rdb)), typ: f.assetType, folder: f.folder, meta: f.meta}
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
		if err == nil && f.wait {
			err = waitTask(ctx, up.task, line, f.timeout)
		}
		if err != nil {
			failed = append(failed, visibleText(file))
			fmt.Fprintf(a.stderr, "dab upload: %s: %s\n", visibleText(file), visibleText(err.Error()))
			if line == nil {
				continue
			}
		}
		if f.asJSON {
			b, _ := json.Marshal(line)
			outln(a.stdout, string(b))
		} else {
			outf(a.stdout, "%s\t%s\t%s\t%s\n", line.TaskID, line.Key, line.File, plural(line.Size, "byte", "bytes"))
			if line.State != "" {
				outf(a.stdout, "  %s %s%s\n", line.State, string(line.Result), line.LastErr)
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %s failed: %s", len(failed), plural(len(a.args), "file", "files"), strings.Join(failed, ", "))
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
	tasks  taskGetter
	typ    string
	folder string
	meta   map[string]string
}

func (u *localUploader) task(ctx context.Context, id string) (api.Task, error) {
	return u.tasks(ctx, id)
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
			return nil, fmt.Errorf("queue upload (redis at %s): %w; the spooled copy %s could not be removed either: %v", redact.URL(a.cfg.RedisURL), err, m.ID, rerr)
		}
		return nil, fmt.Errorf("queue upload (redis at %s): %w; nothing was queued and the file is unchanged: try again", redact.URL(a.cfg.RedisURL), err)
	}
	a.log.Debug("upload.queued", "task_id", task.UploadTaskID(m.ID), "spool_id", m.ID, "key", m.Key())
	return &uploadLine{File: file, TaskID: task.UploadTaskID(m.ID), SpoolID: m.ID, Key: m.Key(), Size: m.Size, SHA256: m.SHA256}, nil
}

// waitTask polls the task until it completes or is archived.
func waitTask(ctx context.Context, get taskGetter, line *uploadLine, timeout time.Duration) error {
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
				// Compact, as the worker wrote it: a server sends it indented.
				var b bytes.Buffer
				if json.Compact(&b, t.Result) == nil {
					line.Result = b.Bytes()
				}
				line.LastErr = ""
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
	return serverTasks(u.c)(ctx, id)
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
	if acc.Key == "" {
		acc.Key = u.typ + "/" + rel // a server from before tus answers named it
	}
	return &uploadLine{File: file, TaskID: acc.TaskID, SpoolID: acc.SpoolID,
		Key: acc.Key, Size: acc.Size, SHA256: acc.SHA256}, nil
}
