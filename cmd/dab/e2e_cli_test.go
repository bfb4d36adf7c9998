package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

// TestNoRedisConfigured: without DAB_REDIS_URL, from a folder where no `dab
// dev` runs, client commands and server roles fail at once, name both
// fixes, and try no Redis: nothing connects to 127.0.0.1:6379, the old
// guess, and nothing is spooled.
func TestNoRedisConfigured(t *testing.T) {
	t.Parallel()
	e := &e2e{t: t, dir: t.TempDir(), env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), testCache}}
	var dials atomic.Int64
	if ln, err := net.Listen("tcp", "127.0.0.1:6379"); err == nil {
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				dials.Add(1)
				c.Close()
			}
		}()
	} else {
		t.Logf("127.0.0.1:6379 is taken (%v): connections there cannot be counted", err)
	}
	file, _ := writeRandomFile(t, t.TempDir(), "a.txt", 10)
	const id = "0123456789abcdef0123"
	dataDir := filepath.Join(e.dir, "dab-data")
	for _, tt := range []struct {
		args []string
		why  string
	}{
		{[]string{"upload", file, "--type", "generic"}, "no `dab dev` runs with the data folder " + dataDir},
		{[]string{"assets", "list"}, ""},
		{[]string{"assets", "show", id}, ""},
		{[]string{"assets", "get", id}, ""},
		{[]string{"tasks", "show", "upload-x"}, ""},
		{[]string{"credits", "grant", "amy", "5"}, ""},
		{[]string{"account", "show", "amy"}, ""},
		{[]string{"purchase", "--asset", id, "--buyer", "amy", "--credits", "1"}, ""},
		{[]string{"listing", "remove", id}, ""},
		{[]string{"ledger", "verify"}, ""},
		{[]string{"reconcile"}, ""},
		{[]string{"work"}, ""},
		{[]string{"watch"}, ""},
		{[]string{"serve"}, ""},
	} {
		start := time.Now()
		out, errOut, code := e.run(nil, tt.args...)
		took := time.Since(start)
		for _, want := range []string{"DAB_REDIS_URL is not set", "set DAB_REDIS_URL (or --redis-url)", "where `dab dev` runs", "set DAB_DATA_DIR to its data folder", tt.why} {
			if !strings.Contains(errOut, want) {
				t.Errorf("dab %v: stderr lacks %q:\n%s", tt.args, want, errOut)
			}
		}
		if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 {
			t.Errorf("dab %v: exit %d, stdout %q, stderr %q; want exit 1 and one line", tt.args, code, out, errOut)
		}
		if took > 5*time.Second {
			t.Errorf("dab %v took %s: it should fail without waiting on anything", tt.args, took)
		}
	}
	if n := dials.Load(); n > 0 {
		t.Errorf("%d connections to 127.0.0.1:6379", n)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "spool")); err == nil {
		t.Error("dab upload spooled the file although no worker could ever see it")
	}
	// dab config still prints, and says what is missing.
	if out, errOut, code := e.run(nil, "config"); code != 0 || !strings.Contains(out, "No Redis: DAB_REDIS_URL is not set") {
		t.Errorf("dab config: exit %d\n%s%s", code, out, errOut)
	}
	// A `dab dev` that ran here and stopped is named as such.
	if err := config.WriteDevState(dataDir, &config.DevState{}); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := e.run(nil, "assets", "list"); code != 1 || !strings.Contains(errOut, "the `dab dev` of the data folder "+dataDir+" is not running") {
		t.Errorf("after a dab dev stopped: exit %d %s", code, errOut)
	}
}

// uploadJSON runs `dab upload --wait --json` and decodes its lines, one
// object per file.
func uploadJSON(t *testing.T, e *e2e, env []string, args ...string) []map[string]any {
	t.Helper()
	out, errOut, code := e.run(env, append([]string{"upload", "--wait", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("dab upload %v: exit %d\n%s%s", args, code, out, errOut)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

func fieldsOf(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// TestCLIOutputs: the CLI's fixes of issue #15, item 4, against a running
// `dab serve`, locally and through its API.
func TestCLIOutputs(t *testing.T) {
	t.Parallel()
	e, url := httpE2E(t)
	e.start(nil, "serve").waitLog(t, "http.listening", 30*time.Second)
	server := []string{"DAB_SERVER=" + url, "DAB_TOKEN=" + e2eToken}
	dir := t.TempDir()
	file := func(name string, size int) string { p, _ := writeRandomFile(t, dir, name, size); return p }

	// --wait: the same JSON shape locally and through the server, for a
	// one-request upload and a resumable (tus) one.
	local := uploadJSON(t, e, nil, "--type", "cyoa", "--folder", "tale", file("NODE_a.png", 1000), file("NODE_b.png", 1100), file("NODE_c.png", 1200))
	remote := uploadJSON(t, e, server, "--type", "cyoa", "--folder", "tale", file("NODE_d.png", 1300), file("NODE_big.png", 17<<20))
	const shape = "file,result,s3_key,sha256,size,spool_id,state,task_id"
	for i, l := range append(local, remote...) {
		if fieldsOf(l) != shape {
			t.Errorf("line %d has %s, want %s", i, fieldsOf(l), shape)
		}
		for _, k := range []string{"s3_key", "sha256", "spool_id", "task_id"} {
			if s, _ := l[k].(string); s == "" {
				t.Errorf("line %d: %s is empty: %v", i, k, l)
			}
		}
		if res, _ := l["result"].(map[string]any); res["asset_id"] == "" || l["state"] != "completed" || !strings.HasPrefix(l["s3_key"].(string), "cyoa/tale/NODE_") {
			t.Errorf("line %d: %v", i, l)
		}
	}
	// Without --json: two lines per file, the outcome's JSON on one line.
	for _, env := range [][]string{nil, server} {
		out, errOut, code := e.run(env, "upload", "--wait", "--folder", "text", file("x1.bin", 10), file("x2.bin", 20))
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[1], "  completed {\"asset_id\":") || !json.Valid([]byte(strings.TrimPrefix(lines[3], "  completed "))) {
			t.Errorf("dab upload --wait (server: %v): exit %d\n%s%s", env != nil, code, out, errOut)
		}
	}

	// Paging keeps --type and --limit; the hint runs as printed.
	out, errOut, code := e.run(nil, "assets", "list", "--type", "cyoa", "--limit", "2")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(last, "more: dab assets list --type cyoa --limit 2 --cursor ") {
		t.Fatalf("dab assets list --type cyoa --limit 2: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = e.run(nil, strings.Fields(strings.TrimPrefix(last, "more: dab "))...)
	if code != 0 || strings.Count(out, "cyoa/tale/") != 2 || !strings.Contains(out, "more: dab assets list --type cyoa --limit 2 --cursor ") {
		t.Fatalf("%s: exit %d\n%s%s", last, code, out, errOut)
	}
	// An unknown type is refused as dab upload refuses it.
	for _, args := range [][]string{{"assets", "list", "--type", "images"}, {"upload", file("y.bin", 5), "--type", "images"}} {
		if _, errOut, code := e.run(nil, args...); code == 0 || !strings.Contains(errOut, `unknown asset type "images": known types are cyoa, generic`) {
			t.Errorf("dab %v: exit %d %s", args, code, errOut)
		}
	}

	// Purchases: plurals, a missing --buyer, and the printed ID is one
	// dab tasks show finds.
	priced := uploadJSON(t, e, nil, "--meta", "price=1", file("one.bin", 30))
	assetID := priced[0]["result"].(map[string]any)["asset_id"].(string)
	steps := []struct {
		env  []string
		args []string
		code int
		want string
	}{
		{nil, []string{"credits", "grant", "amy", "1", "--key", "g-amy"}, 0, "granted 1 credit to amy"},
		{nil, []string{"account", "show", "amy"}, 0, "amy: 1 credit\n"},
		{nil, []string{"purchase", "--asset", assetID, "--credits", "1"}, 2, "--buyer is required"},
		{server, []string{"purchase", "--asset", assetID, "--credits", "1"}, 2, "--buyer is required: DAB_TOKEN is not bound to an account"},
		{nil, []string{"purchase", "--asset", assetID, "--buyer", "amy", "--credits", "1", "--key", "p-amy"}, 0, "purchase p-amy succeeded: amy paid 1 credit to house"},
		{nil, []string{"account", "show", "house"}, 0, "house: 1 credit\n"},
		{nil, []string{"account", "show", "amy"}, 0, "amy: 0 credits\n"},
		{nil, []string{"tasks", "show", "p-amy"}, 0, "purchase-p-amy"},
		{nil, []string{"tasks", "show", "purchase-p-amy"}, 0, "state:       completed"},
		{server, []string{"tasks", "show", "p-amy"}, 0, "purchase-p-amy"},
		{nil, []string{"tasks", "show", "p-nobody"}, 1, `no task "p-nobody"`},
		{nil, []string{"ledger", "verify"}, 0, "1 purchase succeeded"},
	}
	for _, s := range steps {
		out, errOut, code := e.run(s.env, s.args...)
		if code != s.code || !strings.Contains(out+errOut, s.want) {
			t.Errorf("dab %v: exit %d\n%s%s\nwant exit %d and %q", s.args, code, out, errOut, s.code, s.want)
		}
	}

	// A task that failed for good (its spool entry is in a data folder the
	// worker does not read): its attempts and its error as they are.
	lost := []string{"DAB_DATA_DIR=" + filepath.Join(t.TempDir(), "elsewhere")}
	out, errOut, code = e.run(lost, "upload", "--wait", "--json", file("lost.bin", 40))
	var ul uploadLine
	json.Unmarshal([]byte(out), &ul)
	if code != 1 || ul.State != "archived" || !strings.Contains(errOut, "failed for good: upload: spool entry") || strings.Contains(out+errOut, "skip retry") {
		t.Fatalf("upload that fails for good: exit %d\n%s%s", code, out, errOut)
	}
	for _, env := range [][]string{nil, server} {
		out, errOut, code = e.run(env, "tasks", "show", ul.TaskID, "--json")
		var task struct {
			State     string `json:"state"`
			Attempts  int    `json:"attempts"`
			LastError string `json:"last_error"`
		}
		json.Unmarshal([]byte(out), &task)
		if code != 0 || task.State != "archived" || task.Attempts != 1 || !strings.HasSuffix(task.LastError, "upload the file again") {
			t.Errorf("dab tasks show %s (server: %v): exit %d %+v\n%s%s", ul.TaskID, env != nil, code, task, out, errOut)
		}
	}
}

// TestDevPrintsExport: `dab dev` prints the line that points other
// terminals at it, and logs JSON when stderr is not a terminal.
func TestDevPrintsExport(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "my data")
	e := &e2e{t: t, dataDir: dataDir, dir: t.TempDir(), env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), testCache,
		"DAB_DATA_DIR=" + dataDir, "DAB_HTTP_ADDR=127.0.0.1:0", "DAB_DROP_DIR=" + filepath.Join(t.TempDir(), "drop")}}
	if gp := os.Getenv("GOPATH"); gp != "" {
		e.env = append(e.env, "GOPATH="+gp)
	} else if home, err := os.UserHomeDir(); err == nil {
		e.env = append(e.env, "GOPATH="+filepath.Join(home, "go"))
	}
	var stdout harness.LogBuffer
	cmd := exec.Command(dabBin, "dev")
	cmd.Env, cmd.Dir, cmd.Stdout = e.env, e.dir, &stdout
	dev := startCmd(t, cmd)
	dev.waitLog(t, `"msg":"worker.started"`, 60*time.Second) // JSON: stderr is no terminal
	if want := "  export DAB_DATA_DIR='" + dataDir + "'\n"; !strings.Contains(stdout.String(), want) {
		t.Fatalf("dab dev printed no %q:\n%s", want, stdout.String())
	}
	// Another folder finds it through the printed line's variable.
	out, errOut, code := (&e2e{t: t, dir: t.TempDir(), env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), testCache, "DAB_DATA_DIR=" + dataDir}}).run(nil, "config")
	if code != 0 || !strings.Contains(out, "Following the `dab dev`") {
		t.Fatalf("dab config with the dev's DAB_DATA_DIR: exit %d\n%s%s", code, out, errOut)
	}
	dev.cmd.Process.Signal(syscall.SIGTERM)
	<-dev.done
	if c := dev.cmd.ProcessState.ExitCode(); c != 0 {
		t.Fatalf("dab dev exit %d after SIGTERM:\n%s", c, dev.output())
	}
}

// TestAssetsCountAndPrice: dab assets count counts records (all, by type);
// dab assets price puts a dropped file up for sale by the house, and a
// purchase at that price succeeds; --clear takes it off sale.
func TestAssetsCountAndPrice(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	e.start(nil, "work").waitLog(t, "worker.started", 30*time.Second)
	dir := t.TempDir()
	a, _ := writeRandomFile(t, dir, "NODE_a.png", 300)
	b, _ := writeRandomFile(t, dir, "plain.bin", 300)
	if out, errOut, code := e.run(nil, "upload", a, "--type", "cyoa", "--wait"); code != 0 {
		t.Fatalf("upload: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code := e.run(nil, "upload", b, "--wait", "--json")
	if code != 0 {
		t.Fatalf("upload: exit %d\n%s%s", code, out, errOut)
	}
	var line uploadLine
	var res struct {
		AssetID string `json:"asset_id"`
	}
	if json.Unmarshal([]byte(out), &line) != nil || json.Unmarshal(line.Result, &res) != nil {
		t.Fatalf("upload output: %s", out)
	}
	for _, s := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"assets", "count"}, 0, "2"},
		{[]string{"assets", "count", "--type", "cyoa"}, 0, "1"},
		{[]string{"assets", "count", "--type", "images"}, 2, "known"},
		{[]string{"assets", "price", res.AssetID, "abc"}, 2, "whole number"},
		{[]string{"assets", "price", res.AssetID, "4"}, 0, "for sale by the house for 4 credits"},
		{[]string{"credits", "grant", "amy", "10", "--key", "g-amy"}, 0, "balance 10"},
		{[]string{"purchase", "--asset", res.AssetID, "--buyer", "amy", "--credits", "4"}, 0, "succeeded"},
		{[]string{"assets", "price", res.AssetID, "--clear"}, 0, "not for sale by the house"},
	} {
		out, errOut, code := e.run(nil, s.args...)
		if code != s.code || !strings.Contains(out+errOut, s.want) {
			t.Errorf("dab %v: exit %d\n%s%s\nwant exit %d and %q", s.args, code, out, errOut, s.code, s.want)
		}
	}
}

// TestClientFindsDevFromASubfolder: a client command run below the folder
// where `dab dev` runs (the drop folder, say), without DAB_DATA_DIR, finds
// it through the nearest dab-data above; a state file someone else could
// have written (its folder writable by everyone) is never followed: passed
// over above, refused in the folder itself.
func TestClientFindsDevFromASubfolder(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	rec := e.putAsset(t, "generic/found.png", "found.png", "", 100)
	c := storagetest.Options(e.s3)
	root := t.TempDir()
	dataDir := filepath.Join(root, "dab-data")
	st := &config.DevState{PID: os.Getpid(), RedisURL: e.redis, S3Endpoint: c.Endpoint, Bucket: c.Bucket,
		AccessKey: c.AccessKeyID, SecretKey: c.SecretAccessKey, ChecksumMode: c.ChecksumMode}
	if err := config.WriteDevState(dataDir, st); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "drop", "generic", "deeper")
	if err := os.MkdirAll(sub, 0o750); err != nil {
		t.Fatal(err)
	}
	client := &e2e{t: t, dir: sub, env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), testCache}}
	// A state whose dab dev is gone is not followed, whatever process has
	// its PID now (here this test's): what runs is who holds the lock.
	if out, errOut, code := client.run(nil, "assets", "count"); code != 1 || !strings.Contains(errOut, "is not running") {
		t.Fatalf("a state without its dab dev: exit %d\n%s%s", code, out, errOut)
	}
	unlock, err := config.LockDevDir(dataDir) // as the running dab dev holds it
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if out, errOut, code := client.run(nil, "assets", "show", "generic/found.png"); code != 0 || !strings.Contains(out, rec.ID) {
		t.Fatalf("from a subfolder: exit %d\n%s%s", code, out, errOut)
	}

	if err := os.Chmod(config.DevDir(dataDir), 0o777); err != nil {
		t.Fatal(err)
	}
	// Above the folder, it is passed over; in the folder, it is refused.
	out, errOut, code := client.run(nil, "assets", "count")
	if code != 1 || out != "" || !strings.Contains(errOut, "DAB_REDIS_URL is not set") {
		t.Fatalf("a state above that others may write: exit %d\n%s%s", code, out, errOut)
	}
	client.dir = root
	out, errOut, code = client.run(nil, "assets", "count")
	if code != 1 || out != "" || !strings.Contains(errOut, "make it yours alone (chmod o-w") {
		t.Fatalf("a state here that others may write: exit %d\n%s%s", code, out, errOut)
	}
}

// TestGraphvizCacheIsPrivate: go-graphviz's compiled WebAssembly goes into
// the user's own cache folder (~/.cache/dab, 0700), never into the shared
// $TMPDIR/go-graphviz, so code another user planted there is never loaded;
// what is there does not stop dab either; and without a folder of one's
// own (one others may write) it keeps no cache at all.
func TestGraphvizCacheIsPrivate(t *testing.T) {
	t.Parallel()
	run := func(tmp, cache string) {
		t.Helper()
		cmd := exec.Command(dabBin, "--help")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + tmp, "XDG_CACHE_HOME=" + cache}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dab --help with TMPDIR=%s: %v\n%s", tmp, err, out)
		}
	}
	tmp, cache := t.TempDir(), t.TempDir()
	run(tmp, cache)
	if _, err := os.Stat(filepath.Join(tmp, "go-graphviz")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a cache in the shared TMPDIR: %v", err)
	}
	if st, err := os.Stat(filepath.Join(cache, "dab", "go-graphviz")); err != nil || !st.IsDir() {
		t.Errorf("no cache in the user's own folder: %v", err)
	}
	if st, err := os.Stat(filepath.Join(cache, "dab")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("the user's cache folder: %v, %v", st.Mode(), err)
	}

	// Something planted in the shared place: ignored.
	planted := t.TempDir()
	if err := os.WriteFile(filepath.Join(planted, "go-graphviz"), []byte("not a cache"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(planted, t.TempDir())

	// A cache folder others may write: no cache, nothing left anywhere.
	open := t.TempDir()
	if err := os.MkdirAll(filepath.Join(open, "dab"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(open, "dab"), 0o777); err != nil {
		t.Fatal(err)
	}
	tmp2 := t.TempDir()
	run(tmp2, open)
	if left, _ := os.ReadDir(tmp2); len(left) != 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
	if left, _ := os.ReadDir(filepath.Join(open, "dab")); len(left) != 0 {
		t.Errorf("a cache in a folder others may write: %v", left)
	}

	// A cache folder of another user's (sudo keeping HOME): nothing is
	// made in it.
	if os.Geteuid() == 0 {
		theirs := t.TempDir()
		if err := os.Chown(theirs, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		run(t.TempDir(), theirs)
		if left, _ := os.ReadDir(theirs); len(left) != 0 {
			t.Errorf("made in another user's cache folder: %v", left)
		}
	}
}
