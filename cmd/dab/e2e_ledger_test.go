package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/localsvc"
	"github.com/dab-assets/dab/worker/task"
)

// TestLedgerSurvivesCrashes is the ledger's property test: random grants
// and purchases over many accounts and assets while worker processes are
// killed with SIGKILL and Redis is restarted (append-only file on). After
// the dust settles every accepted purchase is applied exactly once and
// `dab ledger verify` passes.
func TestLedgerSurvivesCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for asynq to recover the tasks of killed workers")
	}
	t.Parallel()
	r := harness.Redis(t)
	e := newE2E(t)
	// This test owns its Redis so it can restart it.
	for i, kv := range e.env {
		if strings.HasPrefix(kv, "DAB_REDIS_URL=") {
			e.env[i] = "DAB_REDIS_URL=" + r.URL()
		}
	}
	e.redis = r.URL()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: 5})
	defer rdb.Close()
	ctx := context.Background()
	assets, led := asset.NewStore(rdb, "dab:"), ledger.New(rdb, "dab:", "house")
	rng := rand.New(rand.NewPCG(7, 7))

	var ids []string
	for i := range 40 {
		md := map[string]string{}
		if i%3 == 0 {
			md["price"] = fmt.Sprint(1 + i%5)
		}
		rec, _, err := assets.Put(ctx, asset.Record{Name: "a", Type: "generic", Path: fmt.Sprint(i), S3Bucket: "b", S3Key: fmt.Sprintf("generic/%d", i), SHA256: "s", Metadata: md})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	accounts := []string{"ann", "ben", "cat", "dan", "eve", "fox", "gil", "hal", "ivy", "jon"}
	for _, a := range accounts {
		if _, err := led.Grant(ctx, "seed-"+a, a, 30); err != nil {
			t.Fatal(err)
		}
	}

	workers := []*proc{e.start(nil, "work"), e.start(nil, "work")}
	for _, w := range workers {
		w.waitLog(t, "worker.started", 30*time.Second)
	}
	client := asynq.NewClientFromRedisClient(rdb)

	var mu sync.Mutex
	accepted := map[string]bool{}
	submit := func(n int) {
		p := ledger.PurchaseRequest{
			PurchaseID: fmt.Sprintf("p-%d", n), AssetID: ids[rng.IntN(len(ids))],
			BuyerID: accounts[rng.IntN(len(accounts))], Credits: int64(1 + rng.IntN(5)),
		}
		for range 50 { // retried while Redis restarts, with the same ID
			if _, _, err := led.Accept(ctx, p); err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			mu.Lock()
			accepted[p.PurchaseID] = true
			mu.Unlock()
			tk, _ := task.NewPurchase(task.PurchasePayload{PurchaseID: p.PurchaseID, AssetID: p.AssetID, BuyerID: p.BuyerID, Credits: p.Credits})
			if _, err := client.Enqueue(tk); err == nil || task.IsAlreadyQueued(err) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("purchase p-%d never got through", n)
	}

	for n := range 600 {
		submit(n)
		if n%37 == 0 {
			// Grants keep flowing too.
			a := accounts[rng.IntN(len(accounts))]
			for range 50 {
				if _, err := led.Grant(ctx, fmt.Sprintf("more-%d", n), a, 5); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		switch n {
		case 100, 250, 400:
			i := rng.IntN(len(workers))
			workers[i].cmd.Process.Signal(syscall.SIGKILL)
			<-workers[i].done
			workers[i] = e.start(nil, "work")
		case 300:
			if err := r.Restart(); err != nil {
				t.Fatal(err)
			}
		}
	}

	harness.Eventually(t, 4*time.Minute, "every accepted purchase applied", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id := range accepted {
			p, err := led.GetPurchase(ctx, id)
			if err != nil || p.Status == ledger.StatusPending {
				return false
			}
		}
		return true
	}, nil)
	out, errOut, code := e.run(nil, "ledger", "verify")
	if code != 0 || !strings.Contains(out, "ok:") {
		t.Fatalf("dab ledger verify: exit %d\n%s\n%s", code, out, errOut)
	}
	rep, err := led.Verify(ctx)
	if err != nil || rep.Purchases+rep.Rejected != len(accepted) || rep.Purchases == 0 {
		t.Fatalf("report %+v for %d accepted purchases, %v", rep, len(accepted), err)
	}
}

// TestLedgerCLI grants, buys and verifies with the CLI against a running
// worker, locally and through the API.
func TestLedgerCLI(t *testing.T) {
	t.Parallel()
	e, url := httpE2E(t)
	e.start(nil, "serve").waitLog(t, "http.listening", 30*time.Second)
	file, _ := writeRandomFile(t, t.TempDir(), "NODE_shop.png", 100)
	out, errOut, code := e.run(nil, "upload", file, "--type", "cyoa", "--meta", "price=4", "--wait", "--json")
	if code != 0 {
		t.Fatalf("upload: %s", errOut)
	}
	id := out[strings.Index(out, `"asset_id":"`)+12:]
	id = id[:20]
	steps := []struct {
		env  []string
		args []string
		code int
		want string
	}{
		{nil, []string{"credits", "grant", "amy", "10", "--key", "g-amy"}, 0, "granted 10 credits to amy"},
		{nil, []string{"credits", "grant", "amy", "10", "--key", "g-amy"}, 0, "balance 10"},
		{nil, []string{"credits", "grant", "amy", "11", "--key", "g-amy"}, 1, "same ID, different parameters"},
		{nil, []string{"credits", "grant", "amy", "0"}, 2, "from 1 to"},
		{nil, []string{"purchase", "--asset", id, "--buyer", "amy", "--credits", "3", "--key", "k1"}, 1, "rejected (wrong_price)"},
		{nil, []string{"purchase", "--asset", id, "--buyer", "amy", "--credits", "4", "--key", "k2"}, 0, "succeeded: amy paid 4 credits to house"},
		{nil, []string{"purchase", "--asset", id, "--buyer", "amy", "--credits", "4", "--key", "k2"}, 0, "succeeded"},
		{nil, []string{"purchase", "--asset", id, "--buyer", "amy", "--credits", "5", "--key", "k2"}, 1, "same ID, different parameters"},
		{nil, []string{"purchase", "--asset", "nope", "--buyer", "amy", "--credits", "4"}, 2, "asset_id"},
		{nil, []string{"purchase", "--asset", id, "--buyer", "bo", "--credits", "4", "--key", "k2b"}, 1, "rejected (not_for_sale)"},
		{nil, []string{"listing", "set", id, "4.5"}, 2, "not a whole number"},
		{nil, []string{"listing", "set", id, "4"}, 0, "listed by amy for 4 credits"},
		{[]string{"DAB_SERVER=" + url, "DAB_TOKEN=" + e2eToken}, []string{"credits", "grant", "bo", "9", "--key", "g-bo"}, 0, "granted 9 credits to bo"},
		{[]string{"DAB_SERVER=" + url, "DAB_TOKEN=" + e2eToken}, []string{"purchase", "--asset", id, "--buyer", "bo", "--credits", "4", "--key", "k3"}, 0, "bo paid 4 credits to amy"},
		{[]string{"DAB_SERVER=" + url, "DAB_TOKEN=" + e2eToken}, []string{"account", "show", "amy"}, 0, "amy: 10 credits"},
		{nil, []string{"account", "show", "house"}, 0, "house: 4 credits"},
		{nil, []string{"ledger", "verify"}, 0, "ok: every balance"},
	}
	for _, s := range steps {
		out, errOut, code := e.run(s.env, s.args...)
		if code != s.code || !strings.Contains(out+errOut, s.want) {
			t.Fatalf("dab %v: exit %d\n%s%s\nwant exit %d and %q", s.args, code, out, errOut, s.code, s.want)
		}
	}
}

// TestCreditsGrantChecksBeforeSending: `dab credits grant` refuses an amount
// outside 1..ledger.CreditsMax (and a bad account) as a usage error that
// names the range, before it talks to a server or Redis.
func TestCreditsGrantChecksBeforeSending(t *testing.T) {
	t.Parallel()
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "not expected", http.StatusTeapot)
	}))
	defer srv.Close()
	port, err := localsvc.FreePort() // nothing listens here
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, dir: t.TempDir()}
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), testCache, "DAB_DATA_DIR=" + filepath.Join(e.dir, "data")}
	viaServer := append(append([]string{}, base...), "DAB_SERVER="+srv.URL, "DAB_TOKEN="+e2eToken)
	viaRedis := append(append([]string{}, base...), fmt.Sprintf("DAB_REDIS_URL=redis://127.0.0.1:%d/0", port))
	rangeMsg := fmt.Sprintf("from 1 to %d", int64(ledger.CreditsMax))
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"credits", "grant", "amy", fmt.Sprint(int64(ledger.CreditsMax) + 1)}, rangeMsg},
		{[]string{"credits", "grant", "amy", "0"}, rangeMsg},
		{[]string{"credits", "grant", "amy", "--", "-5"}, rangeMsg},
		{[]string{"credits", "grant", "amy", "99999999999999999999"}, rangeMsg},
		{[]string{"credits", "grant", "amy", "1e3"}, rangeMsg},
		{[]string{"credits", "grant", "bad account", "5"}, "account"},
		{[]string{"credits", "grant", ledger.Issuance, "5"}, "issuance"},
		{[]string{"credits", "grant", "amy", "5", "--key", "bad key"}, "grant key"},
	}
	for _, env := range [][]string{viaServer, viaRedis} {
		e.env = env
		for _, tt := range tests {
			out, errOut, code := e.run(nil, tt.args...)
			if code != 2 || !strings.Contains(errOut, tt.want) {
				t.Errorf("dab %v: exit %d\n%s%s\nwant exit 2 and %q", tt.args, code, out, errOut, tt.want)
			}
		}
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
}
