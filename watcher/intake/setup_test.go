package intake

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/worker/task"
)

// bundle is one test's spool and real Redis.
type bundle struct {
	t      *testing.T
	spool  *spool.Spool
	redis  *localsvc.Redis
	client *asynq.Client
	insp   *asynq.Inspector
	logs   *harness.LogBuffer
}

func setup(t *testing.T) *bundle {
	t.Helper()
	sp, err := spool.Open(filepath.Join(t.TempDir(), "data", "spool"))
	if err != nil {
		t.Fatal(err)
	}
	r := harness.Redis(t)
	rdb := harness.RedisClient(t, r)
	return &bundle{t: t, spool: sp, redis: r, client: asynq.NewClientFromRedisClient(rdb),
		insp: asynq.NewInspectorFromRedisClient(rdb), logs: &harness.LogBuffer{}}
}

// eventually waits for ok, failing the test with the log's tail after
// timeout.
func (b *bundle) eventually(timeout time.Duration, what string, ok func() bool) {
	b.t.Helper()
	harness.Eventually(b.t, timeout, what, ok, func() string { return "log:\n" + b.logs.Tail(3000) })
}

// queued returns the number of upload tasks in the queue.
func (b *bundle) queued() int {
	info, err := b.insp.GetQueueInfo(task.QueueUploads)
	if err != nil {
		return 0
	}
	return info.Size
}
