package watcher

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/internal/spool"
	"github.com/dab-assets/dab/internal/spool/spooltest"
	"github.com/dab-assets/dab/worker/task"
)

// bundle is one test's drop folder, spool and real Redis.
type bundle struct {
	t      *testing.T
	drop   string
	failed string
	spool  *spool.Spool
	redis  *localsvc.Redis
	rdb    *redis.Client
	client *asynq.Client
	insp   *asynq.Inspector
	logs   *harness.LogBuffer
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dir := t.TempDir()
	sp, err := spool.Open(filepath.Join(dir, "data", "spool"))
	if err != nil {
		t.Fatal(err)
	}
	r := harness.Redis(t)
	rdb := harness.RedisClient(t, r)
	return &bundle{
		t: t, drop: filepath.Join(dir, "drop"), failed: filepath.Join(dir, "data", "failed"), spool: sp, redis: r, rdb: rdb,
		client: asynq.NewClientFromRedisClient(rdb), insp: asynq.NewInspectorFromRedisClient(rdb), logs: &harness.LogBuffer{},
	}
}

func (b *bundle) config() Config {
	return Config{
		DropDir: b.drop, FailedDir: b.failed, Types: []string{"cyoa", "generic"},
		Settle: 300 * time.Millisecond, RescanInterval: 30 * time.Second,
		Logger: slog.New(slog.NewJSONHandler(b.logs, nil)),
	}
}

// start runs a watcher with cfg and sp until the test ends.
func (b *bundle) start(cfg Config, sp *spool.Spool) *Watcher {
	b.t.Helper()
	w, err := New(cfg, sp, b.client)
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	b.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.t.Errorf("watcher: %v", err)
		}
	})
	// The watcher is up once its start-up rescan has finished: the type
	// folders are made and every folder is watched. A file moved in before
	// then is found by the rescan rather than by its event, and waits the
	// settle time instead of being taken at once (the rename rule).
	b.eventually(10*time.Second, "the start-up rescan", func() bool { return w.Stats().Rescans >= 1 })
	return w
}

// eventually is harness.Eventually, failing with the watcher's log.
func (b *bundle) eventually(timeout time.Duration, what string, ok func() bool) {
	b.t.Helper()
	harness.Eventually(b.t, timeout, what, ok, func() string { return "watcher log:\n" + b.logs.Tail(3000) })
}

// queued returns the number of upload tasks in the queue.
func (b *bundle) queued() int {
	info, err := b.insp.GetQueueInfo(task.QueueUploads)
	if err != nil {
		return 0
	}
	return info.Size
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestLayoutAndTypes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(b.config(), b.spool)
	write(t, filepath.Join(b.drop, "top.txt"), []byte("top"))
	write(t, filepath.Join(b.drop, "cyoa", "forest", "deep", "NODE_a.png"), []byte("node"))
	write(t, filepath.Join(b.drop, "cyoa", "EDGE_a_to_b.png"), []byte(""))
	write(t, filepath.Join(b.drop, "photos", "cat.jpg"), []byte("meow"))
	b.eventually(10*time.Second, "3 entries", func() bool { return len(spooltest.Entries(t, b.spool)) == 3 })
	got := spooltest.Entries(t, b.spool)
	for _, key := range []string{"generic/top.txt", "cyoa/forest/deep/NODE_a.png", "cyoa/EDGE_a_to_b.png"} {
		if got[key] == nil {
			t.Errorf("no entry for %s (have %v)", key, got)
		}
	}
	if m := got["cyoa/EDGE_a_to_b.png"]; m != nil && m.Size != 0 {
		t.Errorf("empty file entry has size %d", m.Size)
	}
	b.eventually(5*time.Second, "3 tasks", func() bool { return b.queued() == 3 })
	// The unknown type folder is left alone and reported once.
	if _, err := os.Stat(filepath.Join(b.drop, "photos", "cat.jpg")); err != nil {
		t.Fatal("file in an unknown type folder was moved")
	}
	if n := strings.Count(b.logs.String(), `"kind":"unknown-type"`); n != 1 {
		t.Fatalf("unknown type reported %d times", n)
	}
	// An empty folder of an unknown type is reported too, as soon as it appears.
	os.MkdirAll(filepath.Join(b.drop, "videos"), 0o750)
	b.eventually(5*time.Second, "the empty unknown folder reported", func() bool {
		return strings.Contains(b.logs.String(), `folder \"videos\" is not a registered asset type`)
	})
}

func TestRenamedInIsTakenAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.Settle = 20 * time.Second // only the rename rule can take it in time
	b.start(cfg, b.spool)
	outside := filepath.Join(t.TempDir(), "NODE_fast.png")
	write(t, outside, []byte("made elsewhere"))
	old := time.Now().Add(-time.Hour)
	os.Chtimes(outside, old, old)
	if err := os.Rename(outside, filepath.Join(b.drop, "cyoa", "NODE_fast.png")); err != nil {
		t.Fatal(err)
	}
	b.eventually(5*time.Second, "the renamed file", func() bool { return len(spooltest.Entries(t, b.spool)) == 1 })
}

func TestIgnoredNamesWaitForTheirRename(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(b.config(), b.spool)
	for _, name := range []string{".hidden", "movie.mp4.part", "x.tmp", "dl.crdownload", ".a.swp", "~$report.docx", "notes.txt~"} {
		write(t, filepath.Join(b.drop, "generic", name), []byte("in progress"))
	}
	write(t, filepath.Join(b.drop, "generic", ".git", "config"), []byte("hidden folder"))
	// A file written after them is taken: by then the ignored ones had
	// every chance to be taken too, and must not have been.
	write(t, filepath.Join(b.drop, "generic", "ready.txt"), []byte("done"))
	b.eventually(5*time.Second, "the ordinary file written after them", func() bool { return spooltest.Entries(t, b.spool)["generic/ready.txt"] != nil })
	if n := len(spooltest.Entries(t, b.spool)); n != 1 {
		t.Fatalf("%d ignored files taken", n-1)
	}
	// The download finishes: renamed to its real name, it is taken.
	os.Rename(filepath.Join(b.drop, "generic", "movie.mp4.part"), filepath.Join(b.drop, "generic", "movie.mp4"))
	b.eventually(5*time.Second, "the renamed download", func() bool { return spooltest.Entries(t, b.spool)["generic/movie.mp4"] != nil })
}

func TestFilesPresentBeforeStartAndOrphanEntries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 20 {
		write(t, filepath.Join(b.drop, "cyoa", fmt.Sprintf("NODE_%d.png", i)), []byte{byte(i)})
	}
	// A crash between claim and enqueue left an entry without a task.
	orphan, err := b.spool.Put(strings.NewReader("orphan"), spool.Input{Type: "generic", Path: "orphan.txt", Source: "watcher"})
	if err != nil {
		t.Fatal(err)
	}
	// And one entry whose task exists already must not be queued twice.
	queued, _ := b.spool.Put(strings.NewReader("queued"), spool.Input{Type: "generic", Path: "queued.txt", Source: "watcher"})
	tk, _ := task.NewUpload(task.UploadPayload{SpoolID: queued.ID})
	if _, err := b.client.Enqueue(tk); err != nil {
		t.Fatal(err)
	}
	b.start(b.config(), b.spool)
	b.eventually(10*time.Second, "22 tasks", func() bool { return b.queued() == 22 && len(spooltest.Entries(t, b.spool)) == 22 })
	if _, err := b.insp.GetTaskInfo(task.QueueUploads, task.UploadTaskID(orphan.ID)); err != nil {
		t.Fatalf("orphan entry not queued: %v", err)
	}
}

func TestManyFilesAndOverflow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.Claimers = 8
	w := b.start(cfg, b.spool)
	const n = 5000
	for i := range n {
		write(t, filepath.Join(b.drop, "generic", fmt.Sprintf("d%d", i%10), fmt.Sprintf("f%05d", i)), []byte(fmt.Sprint(i)))
	}
	b.eventually(120*time.Second, fmt.Sprintf("%d entries", n), func() bool { return len(spooltest.Entries(t, b.spool)) == n })
	b.eventually(30*time.Second, fmt.Sprintf("%d tasks", n), func() bool { return b.queued() == n })
	for key, m := range spooltest.Entries(t, b.spool) {
		i := strings.TrimLeft(filepath.Base(key), "f0")
		if i == "" {
			i = "0"
		}
		if m.SHA256 != harness.SHA256Hex([]byte(i)) {
			t.Fatalf("%s has the wrong content", key)
		}
	}
	if st := w.Stats(); st.Claimed != n || st.Enqueued != n {
		t.Fatalf("stats %+v", st)
	}
}

// TestOverflowRescans drives the overflow path directly: the kernel's queue
// limit cannot be lowered in a test. With no events at all (polling with a
// rescan far away), only the rescan an overflow triggers finds the files.
func TestOverflowRescans(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.Poll = true
	cfg.RescanInterval = time.Hour
	w := b.start(cfg, b.spool)
	// The start-up rescan runs beside the loop: files written before it is
	// done may be found by it.
	b.eventually(10*time.Second, "the start-up rescan done", func() bool { return w.Stats().Rescans == 1 })
	for i := range 50 {
		write(t, filepath.Join(b.drop, "generic", fmt.Sprintf("lost-%d", i)), []byte("x"))
	}
	// Polling with no rescan due: nothing can find the files but the
	// rescan the overflow asks for.
	if st := w.Stats(); st.Detected != 0 || len(spooltest.Entries(t, b.spool)) != 0 {
		t.Fatalf("files found without events or a rescan: %+v", st)
	}
	w.handleError(fmt.Errorf("read events: %w", fsnotify.ErrEventOverflow))
	b.eventually(10*time.Second, "50 entries after the overflow", func() bool { return len(spooltest.Entries(t, b.spool)) == 50 })
	b.eventually(10*time.Second, "the overflow's rescan done", func() bool { return w.Stats().Rescans >= 2 })
	if st := w.Stats(); st.Overflows != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPollingMode(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.Poll = true
	cfg.RescanInterval = 200 * time.Millisecond
	b.start(cfg, b.spool)
	write(t, filepath.Join(b.drop, "cyoa", "story", "HOPTO_x.png"), []byte("x"))
	b.eventually(10*time.Second, "the polled file", func() bool { return len(spooltest.Entries(t, b.spool)) == 1 })
}

func TestTwoWatchersClaimEachFileOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other, err := spool.Open(filepath.Join(t.TempDir(), "spool2"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.config()
	cfg.Settle = 50 * time.Millisecond
	b.start(cfg, b.spool)
	b.start(cfg, other)
	const n = 500
	for i := range n {
		write(t, filepath.Join(b.drop, "generic", fmt.Sprintf("f%d", i)), []byte(fmt.Sprint(i)))
	}
	b.eventually(60*time.Second, "every file claimed", func() bool { return len(spooltest.Entries(t, b.spool, other)) == n })
	b.eventually(10*time.Second, "every file queued once", func() bool { return b.queued() == n })
	left, _ := os.ReadDir(filepath.Join(b.drop, "generic"))
	if len(left) != 0 {
		t.Fatalf("%d files left in the drop folder", len(left))
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := b.start(b.config(), b.spool)
	secret := filepath.Join(t.TempDir(), "shadow")
	write(t, secret, []byte("root:secret"))
	os.Symlink(secret, filepath.Join(b.drop, "generic", "shadow.txt"))
	os.Symlink(filepath.Dir(secret), filepath.Join(b.drop, "cyoa", "linked-dir"))
	if err := syscall.Mkfifo(filepath.Join(b.drop, "generic", "pipe"), 0o640); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"ctrl\x01name.png": "control character",
		"bad\xffutf8.png":  "UTF-8",
		strings.Repeat("d", 250) + "/" + strings.Repeat("e", 250) + "/" + strings.Repeat("f", 250) + "/" + strings.Repeat("g", 250) + "/" + strings.Repeat("h", 100) + "/NODE_x.png": "S3 allows 1024",
	}
	for name := range bad {
		write(t, filepath.Join(b.drop, "cyoa", name), []byte("bad"))
	}
	b.eventually(10*time.Second, "bad names in the failed folder", func() bool {
		found := 0
		filepath.WalkDir(b.failed, func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".error.json") {
				found++
			}
			return nil
		})
		return found == len(bad)
	})
	for name, want := range bad {
		note, err := os.ReadFile(filepath.Join(b.failed, "cyoa", name) + ".error.json")
		if err != nil || !strings.Contains(string(note), "InvalidName") || !strings.Contains(string(note), strings.Split(want, " ")[0]) {
			t.Errorf("%q: note %s, %v", name[:min(len(name), 20)], note, err)
		}
	}
	if n := len(spooltest.Entries(t, b.spool)); n != 0 {
		t.Fatalf("%d bad inputs were spooled", n)
	}
	if _, err := os.Lstat(filepath.Join(b.drop, "generic", "shadow.txt")); err != nil {
		t.Fatal("symlink was moved")
	}
	w.rescan()
	w.rescan()
	kinds := map[string]int{}
	for _, p := range w.Problems() {
		kinds[p.Kind]++
	}
	if kinds["symlink"] != 2 || kinds["not-a-file"] != 1 {
		t.Fatalf("problems %v", w.Problems())
	}
	logs := b.logs.String()
	if strings.Count(logs, `"kind":"symlink"`) != 2 || strings.Count(logs, "named pipe") != 1 {
		t.Fatalf("problems not logged exactly once each:\n%s", b.logs.Tail(3000))
	}
	if strings.Contains(logs, "root:secret") {
		t.Fatal("the symlink's target was read")
	}
}

func TestRedisDownLosesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.Settle = 50 * time.Millisecond
	b.start(cfg, b.spool)
	b.redis.Stop()
	for i := range 5 {
		write(t, filepath.Join(b.drop, "generic", fmt.Sprintf("f%d", i)), []byte("x"))
	}
	b.eventually(10*time.Second, "an enqueue failure", func() bool { return strings.Contains(b.logs.String(), "watcher.enqueue_failed") })
	// Every file is back (or still) in the drop folder, untouched.
	b.eventually(20*time.Second, "all files back in the drop folder", func() bool {
		left, _ := os.ReadDir(filepath.Join(b.drop, "generic"))
		return len(left) == 5 && len(spooltest.Entries(t, b.spool)) == 0
	})
	if err := b.redis.Restart(); err != nil {
		t.Fatal(err)
	}
	b.eventually(60*time.Second, "all 5 queued after Redis is back", func() bool { return b.queued() == 5 && len(spooltest.Entries(t, b.spool)) == 5 })
}

func TestFileReplacedOrDeletedWhileClaimed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w, err := New(b.config(), b.spool, b.client)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(b.drop, "generic", "a.txt")
	write(t, path, []byte("first"))
	st, _ := os.Stat(path)
	job := claimJob{path: path, c: candidate{typ: "generic", rel: "a.txt", size: st.Size(), mtime: st.ModTime()}}
	// Replaced after the watcher looked: put back, not taken.
	time.Sleep(20 * time.Millisecond)
	write(t, path, []byte("second, longer"))
	w.pending[path] = &job.c
	w.claimBatch(context.Background(), []claimJob{job})
	if data, _ := os.ReadFile(path); string(data) != "second, longer" || len(spooltest.Entries(t, b.spool)) != 0 {
		t.Fatalf("replaced file: drop has %q, %d entries", data, len(spooltest.Entries(t, b.spool)))
	}
	// Deleted after the watcher looked: no crash, nothing taken.
	os.Remove(path)
	w.pending[path] = &job.c
	w.claimBatch(context.Background(), []claimJob{job})
	if len(spooltest.Entries(t, b.spool)) != 0 {
		t.Fatal("a deleted file produced an entry")
	}
}

func TestConfigChecks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.FailedDir = filepath.Join(b.drop, "failed")
	if _, err := New(cfg, b.spool, b.client); err == nil || !strings.Contains(err.Error(), "inside the drop folder") {
		t.Fatalf("failed dir inside drop: %v", err)
	}
	inDrop, _ := spool.Open(filepath.Join(b.drop, "spool"))
	if _, err := New(b.config(), inDrop, b.client); err == nil {
		t.Fatal("spool inside drop accepted")
	}
	cfg = b.config()
	cfg.Types = []string{"cyoa"}
	if _, err := New(cfg, b.spool, b.client); err == nil || !strings.Contains(err.Error(), `"generic" must be registered`) {
		t.Fatalf("types without generic: %v", err)
	}
}

func TestIgnored(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		".x": true, "a.part": true, "a.PART": true, "a.tmp": true, "a.crdownload": true, ".a.swp": true, "a.swp": true,
		"~$doc.docx": true, "a~": true, "a.png": false, "part": false, "~a": false, "a.tmp.png": false,
	} {
		if ignored(name) != want {
			t.Errorf("ignored(%q) = %v", name, !want)
		}
	}
}

// FuzzLocate: whatever path a file has below the drop folder, locate never
// returns a path that leaves its type folder, and a type it returns is known.
func FuzzLocate(f *testing.F) {
	for _, s := range []string{"a.png", "cyoa/NODE_a.png", "cyoa/../../etc/passwd", "x/y", ".h/a", "cyoa/.h", "generic//a"} {
		f.Add(s)
	}
	w := &Watcher{root: "/drop", types: map[string]bool{"cyoa": true, "generic": true}}
	f.Fuzz(func(t *testing.T, rel string) {
		typ, r, ok, _ := w.locate(filepath.Join("/drop", rel))
		if !ok {
			return
		}
		if !w.types[typ] || strings.HasPrefix(r, "/") || r == ".." || strings.HasPrefix(r, "../") || strings.Contains(r, "/../") {
			t.Fatalf("locate(%q) = %q, %q", rel, typ, r)
		}
	})
}

// TestLongFileNameFailsWithItsNote: a file name of 241 to 255 bytes fits
// the drop folder but not a key with its failure note beside it; it goes
// to the failed folder under a name that leaves room for the note, and the
// note names the file as it was. Nothing is spooled.
func TestLongFileNameFailsWithItsNote(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(b.config(), b.spool)
	name := strings.Repeat("n", 246) + ".png" // 250 bytes
	write(t, filepath.Join(b.drop, "cyoa", name), []byte("long"))
	var notes []string
	b.eventually(10*time.Second, "the long name in the failed folder with its note", func() bool {
		notes, _ = filepath.Glob(filepath.Join(b.failed, "cyoa", "*.error.json"))
		return len(notes) == 1
	})
	note, err := os.ReadFile(notes[0])
	if err != nil || !strings.Contains(string(note), "InvalidName") || !strings.Contains(string(note), name) {
		t.Fatalf("note %s, %v", note, err)
	}
	if data, err := os.ReadFile(strings.TrimSuffix(notes[0], ".error.json")); err != nil || string(data) != "long" {
		t.Fatalf("the file beside the note: %q, %v", data, err)
	}
	if strings.Contains(b.logs.String(), "watcher.failure_note") {
		t.Fatalf("a note could not be written:\n%s", b.logs.Tail(3000))
	}
	if n := len(spooltest.Entries(t, b.spool)); n != 0 {
		t.Fatalf("%d entries spooled", n)
	}
}

// TestStopDuringABurst: a watcher stopped while it claims a burst logs no
// error (the claims under way are queued, not put back with an
// enqueue_failed each), says watcher.stopped last, and every file is either
// still in the drop folder or in the spool with its upload queued.
func TestStopDuringABurst(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 600
	src := filepath.Join(filepath.Dir(b.drop), "outside")
	for i := range n {
		write(t, filepath.Join(src, fmt.Sprintf("f%04d.bin", i)), []byte(fmt.Sprint(i)))
	}
	w, err := New(b.config(), b.spool, b.client)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	b.eventually(10*time.Second, "the start-up rescan", func() bool { return w.Stats().Rescans >= 1 })
	for i := range n {
		name := fmt.Sprintf("f%04d.bin", i)
		if err := os.Rename(filepath.Join(src, name), filepath.Join(b.drop, "generic", name)); err != nil {
			t.Fatal(err)
		}
	}
	b.eventually(10*time.Second, "claims under way", func() bool { return w.Stats().Claimed > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	logs := b.logs.String()
	if strings.Contains(logs, `"level":"ERROR"`) || strings.Contains(logs, "watcher.returned") {
		t.Errorf("a stop logged errors or put claimed files back:\n%s", b.logs.Tail(3000))
	}
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	if !strings.Contains(lines[len(lines)-1], "watcher.stopped") {
		t.Errorf("the last line is %s, want watcher.stopped", lines[len(lines)-1])
	}
	left, _ := os.ReadDir(filepath.Join(b.drop, "generic"))
	entries := spooltest.Entries(t, b.spool)
	if len(left)+len(entries) != n {
		t.Fatalf("%d files in the drop folder and %d in the spool, want %d in all", len(left), len(entries), n)
	}
	for key, m := range entries {
		if _, err := b.insp.GetTaskInfo(task.QueueUploads, task.UploadTaskID(m.ID)); err != nil {
			t.Errorf("%s is in the spool without its upload task: %v", key, err)
		}
	}
	t.Logf("stopped with %d files claimed and queued, %d left in the drop folder", len(entries), len(left))
}

// TestSlowClaimIsQueuedWithoutAStop: the stop grace runs from a stop, not
// from the start of a claim: a file whose claim (its hash) takes longer
// than the grace is queued all the same when nothing stops.
func TestSlowClaimIsQueuedWithoutAStop(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.StopGrace = time.Millisecond
	w := b.start(cfg, b.spool)
	big := filepath.Join(filepath.Dir(b.drop), "big.bin")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(256 << 20); err != nil { // sparse: hashing it still reads 256 MiB
		t.Fatal(err)
	}
	f.Close()
	if err := os.Rename(big, filepath.Join(b.drop, "generic", "big.bin")); err != nil {
		t.Fatal(err)
	}
	b.eventually(60*time.Second, "the big file queued", func() bool { return w.Stats().Enqueued == 1 })
	if s := w.Stats(); s.EnqueueErrors != 0 {
		t.Fatalf("%d enqueue errors:\n%s", s.EnqueueErrors, b.logs.Tail(2000))
	}
}
