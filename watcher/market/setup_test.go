package market

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/worker/task"
)

const (
	testAdmin  = "admin-token-for-tests-0001"
	testReader = "read-token-for-tests-00001"
	testIngest = "ingest-token-for-tests-001"
	testBuyer  = "purchase-token-for-tests1" // bound to account zed
	testBroker = "broker-token-for-tests-01"
)

// httpBundle serves the ledger's routes and task queries, with purchases
// submitted through Purchases, on a real redis-server.
type httpBundle struct {
	srv    *httptest.Server
	insp   *asynq.Inspector
	assets *asset.Store
	ledger *ledger.Store
}

func setupHTTP(t *testing.T) *httpBundle {
	t.Helper()
	rdb := harness.RedisClient(t, harness.Redis(t))
	file := filepath.Join(t.TempDir(), "tokens")
	lines := "read " + testReader + "\ningest " + testIngest + "\nread,purchase@zed " + testBuyer + "\nbroker " + testBroker + "\n"
	if err := os.WriteFile(file, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := api.LoadTokens(testAdmin, file)
	if err != nil {
		t.Fatal(err)
	}
	s := api.New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	client := asynq.NewClientFromRedisClient(rdb)
	h := &httpBundle{insp: asynq.NewInspectorFromRedisClient(rdb), assets: asset.NewStore(rdb, "dab:"), ledger: ledger.New(rdb, "dab:", "house")}
	api.RegisterQueries(s, api.QueryDeps{Inspector: h.insp, Queues: []string{task.QueuePurchases}, Assets: h.assets,
		Describe: func(typ string, payload, result []byte) api.TaskFacts {
			return api.TaskFacts(task.Describe(typ, payload, result))
		}})
	api.RegisterLedger(s, h.ledger, h.assets, &Purchases{Ledger: h.ledger, Queue: client})
	h.srv = httptest.NewServer(s.Handler())
	t.Cleanup(h.srv.Close)
	return h
}

// answer is a response read whole.
type answer = harness.Answer

func (h *httpBundle) do(t *testing.T, method, path, token string, body io.Reader, hdr map[string]string) answer {
	t.Helper()
	return harness.Request(t, method, h.srv.URL+path, token, body, hdr)
}
