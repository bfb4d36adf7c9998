package task_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/worker/task"
)

// TestLookupSeesAsynqTasks: tasks asynq holds (pending, and archived) are
// found; IDs it does not hold are missing. It checks Lookup's idea of
// asynq's keys against asynq itself.
func TestLookupSeesAsynqTasks(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	client := asynq.NewClientFromRedisClient(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	ctx := context.Background()
	var ids []string
	for _, id := range []string{"0001", "0002"} {
		tk, err := task.NewUpload(task.UploadPayload{SpoolID: "0000018c0000" + id + "aaaaaaaaaaaa", Type: "generic", Key: "generic/x"}, asynq.Queue("uploads:h"))
		if err != nil {
			t.Fatal(err)
		}
		info, err := client.Enqueue(tk)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.ID)
	}
	if err := insp.ArchiveTask("uploads:h", ids[1]); err != nil {
		t.Fatal(err)
	}
	missing, err := task.Lookup{RDB: rdb}.Missing(ctx, "uploads:h", append([]string{"upload-nothere"}, ids...))
	if err != nil || !reflect.DeepEqual(missing, []string{"upload-nothere"}) {
		t.Fatalf("missing = %v %v, want only upload-nothere", missing, err)
	}
	if missing, _ := (task.Lookup{RDB: rdb}).Missing(ctx, "uploads:other", ids); len(missing) != 2 {
		t.Fatalf("another queue: missing %v, want both", missing)
	}
}
