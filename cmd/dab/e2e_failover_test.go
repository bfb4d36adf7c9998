package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

// failoverE2E is dab (work and watch) on a Sentinel group.
type failoverE2E struct {
	*e2e
	g     *harness.SentinelGroup
	drop  string
	stage string // where files are written before they are moved into drop
}

func newFailoverE2E(t *testing.T, extraEnv ...string) *failoverE2E {
	t.Helper()
	g := harness.StartSentinelGroup(t)
	f := &failoverE2E{e2e: newE2EOn(t, g.URL()), g: g, drop: filepath.Join(t.TempDir(), "drop"), stage: t.TempDir()}
	f.env = append(f.env, "DAB_REDIS_MODE=sentinel", "DAB_DROP_DIR="+f.drop, "DAB_SETTLE=200ms",
		"DAB_RESCAN_INTERVAL=1s", "DAB_JOURNAL_INTERVAL=200ms")
	f.env = append(f.env, extraEnv...)
	return f
}

// startDab starts `dab work` and `dab watch` and waits until both run.
func (f *failoverE2E) startDab(t *testing.T) (work, watch *proc) {
	t.Helper()
	work = f.start(nil, "work")
	work.waitLog(t, "worker.started", 30*time.Second)
	watch = f.start(nil, "watch")
	watch.waitLog(t, "watcher.started", 30*time.Second)
	return work, watch
}

// spooled counts the spool's whole entries.
func (f *failoverE2E) spooled() int {
	n := 0
	des, _ := os.ReadDir(filepath.Join(f.dataDir, "spool"))
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), ".") {
			n++
		}
	}
	return n
}

// mustRun runs dab and fails the test unless it exits 0.
func (f *failoverE2E) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := f.run(nil, args...)
	if code != 0 {
		t.Fatalf("dab %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

// runUntilOK runs dab until it exits 0: a command sent while Redis fails
// over may fail, and the same command again (same idempotency key) is
// safe.
func (f *failoverE2E) runUntilOK(t *testing.T, args ...string) string {
	t.Helper()
	var last string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		out, errOut, code := f.run(nil, args...)
		if code == 0 {
			return out
		}
		last = fmt.Sprintf("exit %d\n%s%s", code, out, errOut)
	}
	t.Fatalf("dab %v did not succeed within 90s; last: %s", args, last)
	return ""
}

// uploadPriced uploads n files for sale at price credits and returns
// their asset IDs.
func (f *failoverE2E) uploadPriced(t *testing.T, n int, price string) []string {
	t.Helper()
	args := []string{"upload", "--wait", "--json", "--folder", "forsale", "--meta", "price=" + price}
	for i := 0; i < n; i++ {
		p, _ := writeRandomFile(t, f.stage, fmt.Sprintf("sale-%d.bin", i), 1000+i)
		args = append(args, p)
	}
	var ids []string
	for _, l := range strings.Split(strings.TrimSpace(f.mustRun(t, args...)), "\n") {
		var ul uploadLine
		var res struct {
			AssetID string `json:"asset_id"`
		}
		if err := json.Unmarshal([]byte(l), &ul); err != nil || json.Unmarshal(ul.Result, &res) != nil || res.AssetID == "" {
			t.Fatalf("upload line %q: %v", l, err)
		}
		ids = append(ids, res.AssetID)
	}
	return ids
}

// dropFiles moves n new files into drop/generic/<folder>/, pause apart,
// and calls at(i) before the i-th file (nil: none).
func (f *failoverE2E) dropFiles(t *testing.T, folder string, n int, pause time.Duration, at func(i int)) {
	t.Helper()
	dst := filepath.Join(f.drop, "generic", folder)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Error(err)
		return
	}
	for i := 0; i < n; i++ {
		if at != nil {
			at(i)
		}
		name := fmt.Sprintf("%s-%03d.bin", folder, i)
		p, _ := writeRandomFile(t, f.stage, name, 512+i)
		if err := os.Rename(p, filepath.Join(dst, name)); err != nil {
			t.Error(err)
			return
		}
		time.Sleep(pause)
	}
}

// countObjects counts the objects under prefix in the bucket.
func (f *failoverE2E) countObjects(t *testing.T, prefix string) int {
	t.Helper()
	n := 0
	err := storagetest.Store(t, f.s3).ListKeys(context.Background(), prefix, func(string) error { n++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// failedFiles lists what the failed folder holds.
func (f *failoverE2E) failedFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(f.dataDir, "failed"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestSentinelFailoverInSync: dab on a master, a replica and three
// sentinels, with DAB_REDIS_MIN_REPLICAS=1. The master is SIGKILLed in the
// middle of a burst of 120 files and of purchases; the sentinels promote
// the replica, and the old master comes back as its replica. Nothing is
// lost and nothing is doubled: 120 objects and 120 records, every
// purchase made once, and the books check out against Redis and the
// journal.
func TestSentinelFailoverInSync(t *testing.T) {
	t.Parallel()
	f := newFailoverE2E(t, "DAB_REDIS_MIN_REPLICAS=1")
	f.startDab(t)
	forSale := f.uploadPriced(t, 4, "2")
	f.mustRun(t, "credits", "grant", "amy", "100", "--key", "g-amy")
	records := f.records(t)
	ctx := context.Background()

	killed := make(chan struct{})
	dropped := make(chan struct{})
	go func() {
		defer close(dropped)
		f.dropFiles(t, "burst", 120, 15*time.Millisecond, func(i int) {
			if i == 60 {
				f.g.Master.Kill()
				close(killed)
			}
		})
	}()
	// Purchases go on through the failover; each is sent until dab
	// answers, always with its own key.
	f.runUntilOK(t, "purchase", "--asset", forSale[0], "--buyer", "amy", "--credits", "2", "--key", "p-0")
	<-killed
	during := make(chan string, 1)
	go func() {
		// Sent while the master is gone: it waits, or fails and is sent
		// again, until the new master has a replica to acknowledge it.
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(300 * time.Millisecond) {
			out, errOut, code := f.run(nil, "purchase", "--asset", forSale[1], "--buyer", "amy", "--credits", "2", "--key", "p-1", "--timeout", "20s")
			if code == 0 || time.Now().After(deadline) {
				during <- fmt.Sprintf("exit %d\n%s%s", code, out, errOut)
				return
			}
		}
	}()
	f.g.WaitFailover(t, 60*time.Second)
	// The old master returns; the sentinels make it the new master's
	// replica, so that writes are acknowledged again.
	if err := f.g.Master.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := <-during; !strings.HasPrefix(got, "exit 0") {
		t.Fatalf("purchase during the failover: %s", got)
	}
	for i, id := range forSale[2:] {
		f.runUntilOK(t, "purchase", "--asset", id, "--buyer", "amy", "--credits", "2", "--key", fmt.Sprintf("p-%d", i+2))
	}
	<-dropped

	f.waitIdle(t, f.drop, 3*time.Minute)
	if n, err := records.Count(ctx, "generic"); err != nil || n != 124 {
		t.Errorf("records: %d %v, want 124 (120 dropped, 4 for sale)", n, err)
	}
	if n := f.countObjects(t, "generic/burst/"); n != 120 {
		t.Errorf("objects under generic/burst/: %d, want 120", n)
	}
	if failed := f.failedFiles(t); len(failed) != 0 {
		t.Errorf("failed folder: %v", failed)
	}
	for _, id := range forSale {
		r, err := records.Get(ctx, id)
		if err != nil || r.Owner != "amy" {
			t.Errorf("asset %s: owner %q %v, want amy", id, r.Owner, err)
		}
	}
	if out := f.mustRun(t, "account", "show", "amy"); !strings.Contains(out, "amy: 92 credits") {
		t.Errorf("amy after 4 purchases of 2: %s", out)
	}
	f.mustRun(t, "ledger", "verify")
	harness.Eventually(t, 30*time.Second, "the journal to hold all 5 entries", func() bool {
		out, _, code := f.run(nil, "ledger", "verify", "--journal")
		return code == 0 && strings.Contains(out, "journal: 5 entries") && !strings.Contains(out, "ahead")
	}, nil)
}

// TestSentinelFailoverToReplicaNeverSynced: the replica loses its link to
// the master (its replication user is disabled) before a second round of
// uploads, grants and purchases; the master is SIGKILLed in the middle of
// a third burst and the sentinels promote the replica, which never saw
// the last two. Without restarting dab: the files still in the spool are
// queued again and uploaded; `dab reconcile` brings back every record
// from the bucket; `dab ledger restore --force` brings back the books from
// the journal, which `dab ledger verify` accepts.
func TestSentinelFailoverToReplicaNeverSynced(t *testing.T) {
	t.Parallel()
	f := newFailoverE2E(t)
	ctx := context.Background()
	master := redis.NewClient(&redis.Options{Addr: f.g.Master.Addr()})
	defer master.Close()
	replica := redis.NewClient(&redis.Options{Addr: f.g.Replica.Addr()})
	defer replica.Close()

	// The replica replicates as a user of its own, so that the test can
	// cut it off from the master while dab goes on.
	for _, cmd := range [][]any{
		{"ACL", "SETUSER", "dabrepl", "on", ">repl-secret", "+psync", "+replconf", "+ping"},
	} {
		if err := master.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, cmd := range [][]any{
		{"CONFIG", "SET", "masteruser", "dabrepl"},
		{"CONFIG", "SET", "masterauth", "repl-secret"},
		{"CLIENT", "KILL", "TYPE", "master"},
	} {
		if err := replica.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	harness.Eventually(t, 20*time.Second, "the replica to sync as dabrepl", func() bool {
		list, err := master.ClientList(ctx).Result()
		return err == nil && strings.Contains(list, "user=dabrepl")
	}, nil)

	work, watch := f.startDab(t)
	// Round 1: on both.
	forSale := f.uploadPriced(t, 2, "2")
	f.mustRun(t, "credits", "grant", "amy", "100", "--key", "g-amy")
	f.mustRun(t, "purchase", "--asset", forSale[0], "--buyer", "amy", "--credits", "2", "--key", "p-amy")
	conn := master.Conn()
	if err := conn.Incr(ctx, "test:probe").Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Wait(ctx, 1, 10*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("replica acknowledged round 1: %d %v", n, err)
	}
	conn.Close()

	// The replica is cut off.
	if err := master.Do(ctx, "ACL", "SETUSER", "dabrepl", "off").Err(); err != nil {
		t.Fatal(err)
	}
	if err := master.Do(ctx, "CLIENT", "KILL", "USER", "dabrepl").Err(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, "the replica's link to be down", func() bool {
		info, err := replica.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:down")
	}, nil)

	// Round 2: on the master only.
	records := f.records(t)
	f.mustRun(t, "credits", "grant", "bo", "50", "--key", "g-bo")
	f.mustRun(t, "purchase", "--asset", forSale[1], "--buyer", "bo", "--credits", "2", "--key", "p-bo")
	f.dropFiles(t, "lost", 40, 0, nil)
	f.waitIdle(t, f.drop, 60*time.Second)
	if n, err := records.Count(ctx, "generic"); err != nil || n != 42 {
		t.Fatalf("records before the failover: %d %v, want 42", n, err)
	}
	harness.Eventually(t, 20*time.Second, "the journal to hold round 2", func() bool {
		out, _, code := f.run(nil, "ledger", "verify", "--journal")
		return code == 0 && strings.Contains(out, "journal: 4 entries") && !strings.Contains(out, "ahead")
	}, nil)

	// Round 3: with the worker frozen, the watcher spools and queues 20
	// files; the master dies in the middle of 10 more.
	if err := work.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	f.dropFiles(t, "queued", 20, 0, nil)
	harness.Eventually(t, 30*time.Second, "20 files spooled and queued", func() bool { return f.spooled() == 20 }, nil)
	f.dropFiles(t, "burst", 10, 10*time.Millisecond, func(i int) {
		if i == 5 {
			f.g.Master.Kill()
		}
	})
	f.g.WaitFailover(t, 60*time.Second)
	if err := work.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if n, err := records.Count(ctx, "generic"); err != nil || n >= 42 {
		t.Fatalf("records right after the failover: %d %v; the replica was meant to miss round 2", n, err)
	}
	if out := f.mustRun(t, "account", "show", "bo"); !strings.Contains(out, "bo: 0 credits") {
		t.Fatalf("bo right after the failover: %s; the replica was meant to miss his grant", out)
	}

	// 1. What waited in the spool (its task lost) is queued again and
	// uploaded, without a restart.
	f.waitIdle(t, f.drop, 2*time.Minute)
	if !strings.Contains(work.output()+watch.output(), `"spool.requeued"`) {
		t.Errorf("no spool.requeued logged: the 20 queued files' tasks were lost with round 2")
	}
	// 2. The records come back from the bucket.
	rep := reconcileRun(t, f.e2e, 0)
	if rep.Journal == 0 {
		t.Errorf("reconcile saw no journal objects (they are counted apart from assets): %+v", rep)
	}
	if len(rep.Recreated) < 40 {
		t.Errorf("reconcile recreated %d records, want at least the 40 of round 2: %+v", len(rep.Recreated), rep)
	}
	if n, err := records.Count(ctx, "generic"); err != nil || n != 72 {
		t.Errorf("records after reconcile: %d %v, want 72", n, err)
	}
	if n := f.countObjects(t, "generic/"); n != 72 {
		t.Errorf("objects: %d, want 72", n)
	}
	if failed := f.failedFiles(t); len(failed) != 0 {
		t.Errorf("failed folder: %v", failed)
	}
	// 3. The books come back from the journal.
	if out, errOut, code := f.run(nil, "ledger", "verify", "--journal"); code != 1 || !strings.Contains(out, "in the journal, not in Redis") {
		t.Errorf("verify --journal after the failover: exit %d\n%s%s", code, out, errOut)
	}
	if out := f.mustRun(t, "ledger", "restore", "--force"); !strings.Contains(out, "restored 4 entries") {
		t.Errorf("restore: %s", out)
	}
	f.mustRun(t, "ledger", "verify")
	f.mustRun(t, "ledger", "verify", "--journal")
	for acct, want := range map[string]string{"amy": "amy: 98 credits", "bo": "bo: 48 credits"} {
		if out := f.mustRun(t, "account", "show", acct); !strings.Contains(out, want) {
			t.Errorf("%s after the restore: %s", acct, out)
		}
	}
	for i, owner := range []string{"amy", "bo"} {
		if r, err := records.Get(ctx, forSale[i]); err != nil || r.Owner != owner {
			t.Errorf("asset %s: owner %q %v, want %s", forSale[i], r.Owner, err, owner)
		}
	}
	// A purchase sent again after the restore is still made once.
	f.mustRun(t, "purchase", "--asset", forSale[1], "--buyer", "bo", "--credits", "2", "--key", "p-bo")
	if out := f.mustRun(t, "account", "show", "bo"); !strings.Contains(out, "bo: 48 credits") {
		t.Errorf("bo after his purchase was sent again: %s", out)
	}
}
