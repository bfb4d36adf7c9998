package task

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Lookup tells which tasks exist, many at a time: one pipelined EXISTS per
// thousand IDs, where asking asynq would be one call each.
type Lookup struct {
	RDB redis.UniversalClient
}

// taskKey is where asynq keeps a task (asynq's internal/base.TaskKey, as of
// v0.26; TestLookupSeesAsynqTasks fails if a new asynq moves it).
func taskKey(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

// Missing returns the task IDs, of those given, that no task of queue has
// (pending, active, scheduled, retrying, archived or kept as completed).
func (l Lookup) Missing(ctx context.Context, queue string, taskIDs []string) ([]string, error) {
	var missing []string
	for start := 0; start < len(taskIDs); start += 1000 {
		chunk := taskIDs[start:min(start+1000, len(taskIDs))]
		pipe := l.RDB.Pipeline()
		cmds := make([]*redis.IntCmd, len(chunk))
		for i, id := range chunk {
			cmds[i] = pipe.Exists(ctx, taskKey(queue, id))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("task: look up %d tasks: %w", len(chunk), err)
		}
		for i, c := range cmds {
			if c.Val() == 0 {
				missing = append(missing, chunk[i])
			}
		}
	}
	return missing, nil
}
