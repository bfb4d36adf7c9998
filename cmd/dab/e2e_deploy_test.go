package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/worker/task"
)

// TestProcfile starts every process of the Procfile from its own lines (the
// command with `dab` found on PATH, as foreman or a PaaS would) and pushes
// files through them.
func TestProcfile(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	drop := filepath.Join(t.TempDir(), "drop")
	e.env = append(e.env, "DAB_DROP_DIR="+drop, "DAB_SETTLE=200ms", "PATH="+filepath.Dir(dabBin)+":"+os.Getenv("PATH"))
	f, err := os.Open("../../Procfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	roles := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, command, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("Procfile line %q is not name: command", line)
		}
		fields := strings.Fields(command)
		if len(fields) == 0 || fields[0] != "dab" {
			t.Fatalf("Procfile process %s runs %q: only dab commands belong there", name, command)
		}
		// Find dab on the PATH the processes get, as foreman would.
		bin := ""
		for _, kv := range e.env {
			if strings.HasPrefix(kv, "PATH=") {
				bin, _ = lookPathIn(fields[0], strings.TrimPrefix(kv, "PATH="))
			}
		}
		if bin == "" {
			t.Fatalf("%s not found on the processes' PATH", fields[0])
		}
		cmd := exec.Command(bin, fields[1:]...)
		cmd.Env, cmd.Dir = append([]string{}, e.env...), e.dir
		p := startCmd(t, cmd)
		p.waitLog(t, "started", 30*time.Second)
		roles[strings.TrimSpace(name)] = true
	}
	if !roles["watcher"] || !roles["worker"] {
		t.Fatalf("Procfile has %v, want watcher and worker", roles)
	}
	for i := range 5 {
		writeRandomFile(t, filepath.Join(drop, "generic"), fmt.Sprintf("f%d.bin", i), 1000+i)
	}
	records := e.records(t)
	harness.Eventually(t, 60*time.Second, "5 records", func() bool { n, _ := records.Count(context.Background(), ""); return n == 5 }, nil)
}

func lookPathIn(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

// TestManyHosts runs two simulated hosts (own data folder and host ID), each
// with a watcher and a worker, and a third worker, on one Redis and store.
func TestManyHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for asynq to recover a killed worker's queue")
	}
	t.Parallel()
	e := newE2E(t)
	host := func(id string) []string {
		return []string{"DAB_HOST_ID=" + id, "DAB_DATA_DIR=" + filepath.Join(e.dir, id, "data"),
			"DAB_DROP_DIR=" + filepath.Join(e.dir, id, "drop"), "DAB_SETTLE=200ms"}
	}
	for _, id := range []string{"hosta", "hostb"} {
		e.start(host(id), "watch").waitLog(t, "watcher.started", 30*time.Second)
	}
	workers := map[string]*proc{}
	for _, id := range []string{"hosta", "hostb", "hostc"} {
		workers[id] = e.start(host(id), "work")
		workers[id].waitLog(t, "worker.started", 30*time.Second)
	}
	records := e.records(t)
	drop := func(id, batch string, n int) {
		for i := range n {
			writeRandomFile(t, filepath.Join(e.dir, id, "drop", "generic"), fmt.Sprintf("%s-%s-%d.bin", id, batch, i), 500+i+len(batch)*100)
		}
	}
	drop("hosta", "a", 10)
	drop("hostb", "a", 10)
	harness.Eventually(t, 60*time.Second, "20 records", func() bool { n, _ := records.Count(context.Background(), ""); return n == 20 }, nil)
	for _, id := range []string{"hosta", "hostb"} {
		if n := strings.Count(workers[id].output(), `"msg":"upload.done"`); n != 10 {
			t.Fatalf("the worker of %s uploaded %d files, want its own 10", id, n)
		}
	}
	if strings.Contains(workers["hostc"].output(), `"msg":"upload.done"`) {
		t.Fatal("the worker of hostc uploaded another host's file")
	}
	// hosta's worker dies: its files wait for it, then complete.
	workers["hosta"].cmd.Process.Signal(syscall.SIGKILL)
	<-workers["hosta"].done
	drop("hosta", "later", 5)
	rdb := redis.NewClient(&redis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(e.redis, "redis://"), "/0")})
	defer rdb.Close()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	hostaWaiting := func() bool {
		info, err := insp.GetQueueInfo(task.UploadQueue("hosta"))
		return err == nil && info.Pending == 5
	}
	harness.Eventually(t, 30*time.Second, "hosta's files queued and waiting", hostaWaiting, nil)
	// The live workers take work queued after hosta's files, and still
	// leave those alone: hostb's a dropped file, hostc's a `dab upload`.
	drop("hostb", "later", 1)
	later, _ := writeRandomFile(t, t.TempDir(), "hostc-later.bin", 700)
	if out, errOut, code := e.run(host("hostc"), "upload", later, "--wait"); code != 0 || !strings.Contains(out, "completed") {
		t.Fatalf("upload through hostc: exit %d\n%s\n%s", code, out, errOut)
	}
	harness.Eventually(t, 30*time.Second, "hostb's later file recorded", func() bool {
		return strings.Count(workers["hostb"].output(), `"msg":"upload.done"`) == 11
	}, nil)
	if n := strings.Count(workers["hostc"].output(), `"msg":"upload.done"`); n != 1 || !hostaWaiting() {
		info, _ := insp.GetQueueInfo(task.UploadQueue("hosta"))
		t.Fatalf("while hosta's worker is down: hostc uploaded %d files, want its own 1; hosta's queue %+v", n, info)
	}
	if n, _ := records.Count(context.Background(), ""); n != 22 {
		t.Fatalf("%d records while hosta's worker is down, want 22", n)
	}
	workers["hosta"] = e.start(host("hosta"), "work")
	harness.Eventually(t, 60*time.Second, "27 records", func() bool {
		n, _ := records.Count(context.Background(), "")
		return n == 27
	}, func() string {
		n, _ := records.Count(context.Background(), "")
		info, _ := insp.GetQueueInfo(task.UploadQueue("hosta"))
		return fmt.Sprintf("%d records; queue %+v; restarted worker:\n%s", n, info, workers["hosta"].output())
	})

	// Purchases are served by any worker, whichever host.
	led := ledger.New(rdb, "dab:", "house")
	page, _ := records.List(context.Background(), asset.ListOptions{Limit: 5})
	client := asynq.NewClientFromRedisClient(rdb)
	led.Grant(context.Background(), "g", "buyer", 100)
	for i, r := range page.Records {
		if _, err := led.SetPrice(context.Background(), r.ID, 1, "test"); err != nil {
			t.Fatalf("price %s: %v", r.ID, err)
		}
		p := ledger.PurchaseRequest{PurchaseID: fmt.Sprintf("mh-%d", i), AssetID: r.ID, BuyerID: "buyer", Credits: 1}
		led.Accept(context.Background(), p)
		tk, _ := task.NewPurchase(task.PurchasePayload{PurchaseID: p.PurchaseID, AssetID: p.AssetID, BuyerID: p.BuyerID, Credits: 1})
		client.Enqueue(tk)
	}
	harness.Eventually(t, 30*time.Second, "5 purchases", func() bool {
		for i := range page.Records {
			if p, err := led.GetPurchase(context.Background(), fmt.Sprintf("mh-%d", i)); err != nil || p.Status != ledger.StatusSucceeded {
				return false
			}
		}
		return true
	}, nil)
}
