package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/apiclient"
	"github.com/dab-assets/dab/worker/task"
)

// apiClient builds a client for DAB_SERVER; its resumable-upload state lives
// in the data folder.
func (a *app) apiClient() (*apiclient.Client, error) {
	c, err := apiclient.New(a.cfg.Server, a.cfg.Token)
	if err != nil {
		return nil, err
	}
	c.StateDir = filepath.Join(a.cfg.DataDir, "client-uploads")
	return c, nil
}

// taskGetter reads a task by ID; api.ErrTaskNotFound when no queue holds it.
type taskGetter func(ctx context.Context, id string) (api.Task, error)

// localTasks reads tasks from Redis, searching every queue.
func localTasks(insp *asynq.Inspector) taskGetter {
	return func(_ context.Context, id string) (api.Task, error) {
		info, err := api.FindTask(insp, nil, id)
		if err != nil {
			return api.Task{}, err
		}
		return api.TaskFromInfo(info, describeTask(info.Type, info.Payload, info.Result)), nil
	}
}

// describeTask is the task contract's Describe in the API's terms.
func describeTask(typeName string, payload, result []byte) api.TaskFacts {
	return api.TaskFacts(task.Describe(typeName, payload, result))
}

// serverTasks reads tasks through DAB_SERVER.
func serverTasks(c *apiclient.Client) taskGetter {
	return func(ctx context.Context, id string) (api.Task, error) {
		t, err := c.Task(ctx, id)
		var ae *apiclient.Error
		if errors.As(err, &ae) && ae.Status == 404 {
			return t, fmt.Errorf("%w: no task %q (finished tasks are kept for 7 days)", api.ErrTaskNotFound, id)
		}
		return t, err
	}
}

// findTask reads the task id names: a task ID, or the ID `dab purchase`
// prints (its task is task.PurchaseTaskID of it).
func findTask(ctx context.Context, get taskGetter, id string) (api.Task, error) {
	t, err := get(ctx, id)
	if errors.Is(err, api.ErrTaskNotFound) {
		if pt, perr := get(ctx, task.PurchaseTaskID(id)); perr == nil {
			return pt, nil
		}
	}
	return t, err
}

func (c *cli) tasksCmd() *cobra.Command {
	var asJSON bool
	show := &cobra.Command{
		Use:   "show ID [--json]",
		Short: "show an upload's or a purchase's task: state, attempts, last error, asset",
		Long: `Show a task: its state (pending, active, retry, completed, archived: failed
for good), how many times it ran (asynq's count: a run of an archived task
that fails again is not counted again), its last error and, once done, the
asset.
ID is a task ID as dab upload prints it (upload-...), or a purchase ID as
dab purchase prints it. Finished tasks are kept for 7 days.`,
		Example: `  dab tasks show upload-0f6c2d1e9a8b7c6d5e4f3a2b
  dab tasks show purchase-5d41402abc4b2a76b9719d91 --json`,
		Args:              exactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := c.app(args, roleClient)
			if err != nil {
				return err
			}
			return a.showTask(cmd.Context(), args[0], asJSON)
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd := &cobra.Command{
		Use:     "tasks VERB",
		Short:   "show a task's state",
		Example: `  dab tasks show upload-0f6c2d1e9a8b7c6d5e4f3a2b`,
	}
	cmd.AddCommand(show)
	return cmd
}

func (a *app) showTask(ctx context.Context, id string, asJSON bool) error {
	var t api.Task
	err := a.viaServerOrRedis(ctx, func(c *apiclient.Client) (err error) {
		t, err = findTask(ctx, serverTasks(c), id)
		return err
	}, func(rdb redis.UniversalClient) (err error) {
		t, err = findTask(ctx, localTasks(asynq.NewInspectorFromRedisClient(rdb)), id)
		return err
	})
	if errors.Is(err, api.ErrTaskNotFound) {
		return fmt.Errorf("no task %q (finished tasks are kept for 7 days): give the ID dab upload or dab purchase printed", id)
	}
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(a, t)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"id", t.ID}, {"type", t.Type}, {"queue", t.Queue}, {"state", t.State},
		{"attempts", fmt.Sprint(t.Attempts)}, {"last_error", t.LastError}, {"asset_id", t.AssetID},
	} {
		outf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	return tw.Flush()
}

// viaServerOrRedis runs remote with a client of DAB_SERVER when that is set,
// else local with a connection to the local Redis (closed afterwards).
func (a *app) viaServerOrRedis(ctx context.Context, remote func(*apiclient.Client) error, local func(redis.UniversalClient) error) error {
	if a.cfg.Server != "" {
		c, err := a.apiClient()
		if err != nil {
			return err
		}
		return remote(c)
	}
	rdb, err := a.connectRedis(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	return local(rdb)
}
