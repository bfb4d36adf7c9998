package main

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/watcher/intake"
	"github.com/dab-assets/dab/worker/task"
)

func (c *cli) importCmd() *cobra.Command {
	var (
		req     api.ImportRequest
		meta    = metaFlag{}
		wait    bool
		asJSON  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "import SOURCE --type TYPE [--path PATH] [--key KEY] [--sha256 HEX] [--meta KEY=VALUE]... [--wait] [--json]",
		Short: "bank a file that is not on a dab host: s3://bucket/key or an https:// URL",
		Long: `Queue an import: any worker fetches SOURCE (an object of a bucket dab's
credentials can read, or an https:// URL; plain http and loopback or private
addresses only where DAB_IMPORT_ALLOW_HTTP / DAB_IMPORT_ALLOW_PRIVATE name the
host), checks its size (DAB_IMPORT_MAX_BYTES) and, with --sha256, its hash,
and banks it as TYPE/PATH like an upload (PATH defaults to the source's file
name: the last segment of its key or URL path). The idempotency key (--key,
or a new one, printed) makes a retried import run once.`,
		Example: `  dab import s3://partner-bucket/covers/NODE_intro.png --type cyoa --path forest/NODE_intro.png --wait
  dab import https://cdn.example.org/a.png --type generic --path web/a.png --sha256 <hex> --meta price=3 --key job-42`,
		Args:              exactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := c.app(nil, roleClient)
			if err != nil {
				return err
			}
			req.Source, req.Metadata = args[0], meta
			if req.Type == "" {
				return usagef("--type is required: the asset goes to TYPE/PATH in the bucket")
			}
			if req.Path == "" {
				if req.Path = importPathOf(req.Source); req.Path == "" {
					return usagef("%s names no file: give --path, the asset goes to TYPE/PATH in the bucket", task.RedactSource(req.Source))
				}
			}
			if req.Key == "" {
				req.Key = newKey("import")
			}
			ctx := cmd.Context()
			var (
				id       string
				replayed bool
				tasks    taskGetter
			)
			if a.cfg.Server != "" {
				cl, err := a.apiClient()
				if err != nil {
					return err
				}
				var ans api.ImportAnswer
				if ans, replayed, err = cl.Import(ctx, req); err != nil {
					return err
				}
				id, tasks = ans.TaskID, serverTasks(cl)
			} else {
				rdb, err := a.connectRedis(ctx)
				if err != nil {
					return err
				}
				defer rdb.Close()
				q := a.asynqClient(rdb)
				defer q.Close()
				insp := asynq.NewInspectorFromRedisClient(rdb)
				id, replayed, err = (&intake.Imports{Queue: q, Tasks: insp, Sources: a.importSources()}).Import(ctx, req)
				if err != nil {
					return importError(err)
				}
				tasks = localTasks(insp)
			}
			line := uploadLine{File: task.RedactSource(req.Source), TaskID: id, Key: req.Type + "/" + req.Path}
			if wait {
				if err := waitTask(ctx, tasks, &line, timeout); err != nil {
					return err
				}
			}
			if asJSON {
				return writeJSON(a, line)
			}
			how := "queued"
			if replayed {
				how = "queued before (the same key): not queued again"
			}
			outf(a.stdout, "import %s -> %s: %s, task %s (key %s)\n", line.File, line.Key, how, id, req.Key)
			if wait {
				outf(a.stdout, "  %s %s\n", line.State, string(line.Result))
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&req.Type, "type", "", "asset `TYPE` (a plugin: generic, cyoa)")
	fs.StringVar(&req.Path, "path", "", "`PATH` below the type folder: the object key is TYPE/PATH (default: the source's file name)")
	fs.StringVar(&req.Key, "key", "", "idempotency `KEY`: the same import sent again runs once (default: a new one, printed)")
	fs.StringVar(&req.SHA256, "sha256", "", "`HEX` SHA-256 the source must have (the import fails otherwise)")
	fs.Var(meta, "meta", "`KEY=VALUE` metadata for the record (repeatable; price=N sells it for N credits)")
	fs.BoolVar(&wait, "wait", false, "wait until a worker has banked it, and print the result")
	fs.DurationVar(&timeout, "timeout", 10*time.Minute, "with --wait: how long to wait (a `DURATION`)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// importPathOf is the file name an import source names: the last segment
// of an s3:// key or of a URL's (decoded) path; "" when there is none.
func importPathOf(source string) string {
	var p string
	if _, key, err := task.SplitS3(source); err == nil {
		p = key
	} else if u, err := url.Parse(source); err == nil && strings.HasPrefix(source, "http") {
		p = u.Path
	}
	if p == "" || strings.HasSuffix(p, "/") {
		return ""
	}
	return path.Base(p)
}

// importError makes a refused request a usage error (exit 2).
func importError(err error) error {
	if errors.Is(err, api.ErrBadImport) || errors.Is(err, api.ErrImportRefused) || errors.Is(err, api.ErrImportConflict) {
		return usageError{err}
	}
	return err
}

// importSources are the buckets this dab's imports may read.
func (a *app) importSources() task.S3Sources {
	return task.S3Sources{Buckets: a.cfg.ImportS3Buckets, Own: a.cfg.S3.Bucket}
}
