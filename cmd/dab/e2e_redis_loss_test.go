package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestSpooledFilesSurviveALostRedis: a file is spooled and queued, then
// Redis loses everything (FLUSHALL stands for a failover to a replica that
// had not synced, or a restore from an older backup). A running `dab work`
// queues the entry again within a rescan interval (after the entry's
// OrphanAgeMin), without a restart, and the file is uploaded and recorded.
func TestSpooledFilesSurviveALostRedis(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	e.env = append(e.env, "DAB_RESCAN_INTERVAL=500ms")
	file, _ := writeRandomFile(t, t.TempDir(), "orphan.bin", 3000)
	if out, errOut, code := e.run(nil, "upload", file); code != 0 {
		t.Fatalf("upload: exit %d\n%s%s", code, out, errOut)
	}
	if err := e.redisClient(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	w := e.start(nil, "work")
	w.waitLog(t, `"spool.requeued"`, 30*time.Second)
	w.waitLog(t, `"upload.done"`, 30*time.Second)
	out, errOut, code := e.run(nil, "assets", "list")
	if code != 0 || !strings.Contains(out, "generic/orphan.bin") {
		t.Fatalf("assets list: exit %d\n%s%s", code, out, errOut)
	}
}
