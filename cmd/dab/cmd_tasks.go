package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/apiclient"
)

// localTask reads a task from Redis, searching every queue.
func localTask(insp *asynq.Inspector, id string) (api.Task, error) {
	info, err := api.FindTask(insp, nil, id)
	if err != nil {
		return api.Task{}, err
	}
	return api.TaskFromInfo(info), nil
}

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

// runTasks: dab tasks show ID [--json].
func runTasks(ctx context.Context, e *env, args []string) error {
	var asJSON bool
	a, err := e.parse("tasks", args, func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") })
	if err != nil {
		return err
	}
	if len(a.args) != 2 || a.args[0] != "show" {
		return fmt.Errorf("%w: dab tasks show ID [--json]", errUsage)
	}
	id := a.args[1]
	var t api.Task
	err = a.viaServerOrRedis(ctx, func(c *apiclient.Client) (err error) {
		t, err = c.Task(ctx, id)
		return err
	}, func(rdb redis.UniversalClient) (err error) {
		t, err = localTask(asynq.NewInspectorFromRedisClient(rdb), id)
		if errors.Is(err, api.ErrTaskNotFound) {
			return fmt.Errorf("no task %q (finished tasks are kept for 7 days)", id)
		}
		return err
	})
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
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
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
