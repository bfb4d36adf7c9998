package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
)

type ledgerBundle struct {
	srv    *httptest.Server
	led    *ledger.Store
	assets *asset.Store
}

// setupLedger serves RegisterLedger on a real redis-server.
func setupLedger(t *testing.T) *ledgerBundle {
	t.Helper()
	rdb := harness.RedisClient(t, harness.Redis(t))
	tokens, err := LoadTokens(adminTok, "")
	if err != nil {
		t.Fatal(err)
	}
	return serveLedger(t, rdb, tokens)
}

// serveLedger serves RegisterLedger (without a purchase submitter) for
// tokens on rdb.
func serveLedger(t *testing.T, rdb *redis.Client, tokens *Tokens) *ledgerBundle {
	t.Helper()
	s := New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	b := &ledgerBundle{led: ledger.New(rdb, "dab:", "house"), assets: asset.NewStore(rdb, "dab:")}
	RegisterLedger(s, b.led, b.assets, nil)
	b.srv = httptest.NewServer(s.Handler())
	t.Cleanup(b.srv.Close)
	return b
}

type ledgerAnswer struct {
	status int
	body   []byte
}

func (a ledgerAnswer) err() ErrorBody {
	var e ErrorBody
	json.Unmarshal(a.body, &e)
	return e
}

// do sends body (a []byte, so that its length is known up front) as admin.
func (b *ledgerBundle) do(t *testing.T, method, path, key string, body []byte) ledgerAnswer {
	t.Helper()
	hdr := map[string]string{"Content-Type": "application/json"}
	if key != "" {
		hdr["Idempotency-Key"] = key
	}
	a := harness.Request(t, method, b.srv.URL+path, adminTok, bytes.NewReader(body), hdr)
	return ledgerAnswer{a.Status, a.Body}
}

func (b *ledgerBundle) account(t *testing.T, id string) ledger.Account {
	t.Helper()
	a := b.do(t, "GET", "/v1/accounts/"+id, "", nil)
	var acct ledger.Account
	if err := json.Unmarshal(a.body, &acct); a.status != 200 || err != nil {
		t.Fatalf("GET /v1/accounts/%s: %d %s", id, a.status, a.body)
	}
	return acct
}

// TestLedgerJSONTrailingDataOverHTTP: the security review's body,
// {"credits":5} + 5 MB of spaces + garbage, was granted (201).
func TestLedgerJSONTrailingDataOverHTTP(t *testing.T) {
	t.Parallel()
	b := setupLedger(t)
	rec, _, err := b.assets.Put(context.Background(), asset.Record{Name: "a", Type: "generic", Path: "a", S3Bucket: "b", S3Key: "generic/a", SHA256: "s"})
	if err != nil {
		t.Fatal(err)
	}
	const obj = `{"credits":5}`
	attack := []byte(obj + strings.Repeat(" ", 5<<20) + "garbage")
	inside := []byte(obj + strings.Repeat(" ", 60000) + "garbage")
	spaces := []byte(obj + strings.Repeat(" ", JSONBodyMax-len(obj)))
	tests := []struct {
		name, path, key string
		body            []byte
		status          int
		code, message   string
	}{
		{"grant: the attack", "/v1/accounts/alice/grants", "g1", attack, 413, "too_large", "64 KiB"},
		{"grant: garbage inside the limit", "/v1/accounts/alice/grants", "g2", inside, 400, "bad_json", "after the JSON value"},
		{"price: the attack", "/v1/assets/" + rec.ID + "/price", "", attack, 413, "too_large", "64 KiB"},
		{"price: garbage inside the limit", "/v1/assets/" + rec.ID + "/price", "", inside, 400, "bad_json", "after the JSON value"},
	}
	for _, tt := range tests {
		a := b.do(t, "POST", tt.path, tt.key, tt.body)
		if e := a.err(); a.status != tt.status || e.Error.Code != tt.code || !strings.Contains(e.Error.Message, tt.message) {
			t.Errorf("%s: %d %s, want %d %s %q", tt.name, a.status, a.body, tt.status, tt.code, tt.message)
		}
	}
	if acct := b.account(t, "alice"); acct.Balance != 0 || len(acct.Entries) != 0 {
		t.Fatalf("refused bodies granted: %+v", acct)
	}
	if r, _ := b.assets.Get(context.Background(), rec.ID); r.Price != nil {
		t.Fatalf("refused bodies set a price: %+v", r)
	}
	// Whitespace up to the limit is still JSON.
	if a := b.do(t, "POST", "/v1/accounts/alice/grants", "g3", spaces); a.status != 201 {
		t.Fatalf("grant padded to the limit: %d %s", a.status, a.body)
	}
}

// TestLedgerCreditsOverHTTP: amounts are exact up to CreditsMax (a grant
// of 123456789012345 once broke every account read with 503), CreditsMax+1
// is a 400, and passing the issuance limit is a 422 that says why, not a
// 503 that invites a retry.
func TestLedgerCreditsOverHTTP(t *testing.T) {
	t.Parallel()
	b := setupLedger(t)
	ctx := context.Background()
	grant := func(account, key string, n int64) ledgerAnswer {
		return b.do(t, "POST", "/v1/accounts/"+account+"/grants", key, []byte(fmt.Sprintf(`{"credits": %d}`, n)))
	}
	const odd = 123_456_789_012_345
	for _, n := range []int64{odd, ledger.CreditsMax} {
		account := fmt.Sprint("acct-", n)
		a := grant(account, fmt.Sprint("k-", n), n)
		var g ledger.GrantResult
		if err := json.Unmarshal(a.body, &g); a.status != 201 || err != nil || g.Credits != n || g.Balance != n {
			t.Fatalf("grant of %d: %d %s", n, a.status, a.body)
		}
		if acct := b.account(t, account); acct.Balance != n || len(acct.Entries) != 1 || acct.Entries[0].Amount != n {
			t.Fatalf("account after a grant of %d: %+v", n, acct)
		}
	}
	if iss := b.account(t, ledger.Issuance); iss.Balance != -(odd+ledger.CreditsMax) || iss.Entries[1].Amount != odd {
		t.Fatalf("issuance: %+v", iss)
	}
	a := grant("acct-over", "k-over", ledger.CreditsMax+1)
	if e := a.err(); a.status != 400 || e.Error.Code != "bad_credits" || !strings.Contains(e.Error.Message, fmt.Sprint("from 1 to ", int64(ledger.CreditsMax))) {
		t.Fatalf("grant of CreditsMax+1: %d %s", a.status, a.body)
	}
	rec, _, err := b.assets.Put(ctx, asset.Record{Name: "a", Type: "generic", Path: "a", S3Bucket: "b", S3Key: "generic/a", SHA256: "s"})
	if err != nil {
		t.Fatal(err)
	}
	price := func(n int64) ledgerAnswer {
		return b.do(t, "POST", "/v1/assets/"+rec.ID+"/price", "", []byte(fmt.Sprintf(`{"credits": %d}`, n)))
	}
	if a := price(ledger.CreditsMax); a.status != 200 {
		t.Fatalf("price CreditsMax: %d %s", a.status, a.body)
	}
	if a := price(ledger.CreditsMax + 1); a.status != 400 || a.err().Error.Code != "bad_credits" {
		t.Fatalf("price CreditsMax+1: %d %s", a.status, a.body)
	}

	// Fill issuance up to one credit below IssuanceMax.
	var issued int64 = odd + ledger.CreditsMax
	for i := 0; issued < ledger.IssuanceMax-1; i++ {
		n := min(ledger.CreditsMax, ledger.IssuanceMax-1-issued)
		if _, err := b.led.Grant(ctx, fmt.Sprint("fill-", i), "filler", n); err != nil {
			t.Fatal(err)
		}
		issued += n
	}
	a = grant("late", "k-late", 2)
	if e := a.err(); a.status != 422 || e.Error.Code != "issuance_limit" || !strings.Contains(e.Error.Message, "at most 1") {
		t.Fatalf("grant past the issuance limit: %d %s", a.status, a.body)
	}
	if a := grant("late", "k-late", 1); a.status != 201 {
		t.Fatalf("grant of the last credit: %d %s", a.status, a.body)
	}
	if a := grant("later", "k-later", 1); a.status != 422 || a.err().Error.Code != "issuance_limit" {
		t.Fatalf("grant at the issuance limit: %d %s", a.status, a.body)
	}
	if acct := b.account(t, "later"); acct.Balance != 0 {
		t.Fatalf("refused grant moved credits: %+v", acct)
	}
	if rep, err := b.led.Verify(ctx); err != nil || !rep.OK() || rep.Issued != ledger.IssuanceMax {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}

// TestGrantNotReplicated: with DAB_REDIS_MIN_REPLICAS set and no replica
// to acknowledge, a grant answers 503 not_replicated with Retry-After; sent
// again with the same key it is applied once.
func TestGrantNotReplicated(t *testing.T) {
	t.Parallel()
	b := &ledgerBundle{}
	rdb := harness.RedisClient(t, harness.Redis(t))
	b.led = ledger.NewWithOptions(rdb, "dab:", "house", ledger.Options{MinReplicas: 1, ReplicaTimeout: 50 * time.Millisecond})
	tokens, _ := LoadTokens(adminTok, "")
	s := New(tokens, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	RegisterLedger(s, b.led, asset.NewStore(rdb, "dab:"), nil)
	b.srv = httptest.NewServer(s.Handler())
	t.Cleanup(b.srv.Close)
	for range 2 {
		req, _ := http.NewRequest("POST", b.srv.URL+"/v1/accounts/amy/grants", strings.NewReader(`{"credits": 5}`))
		req.Header.Set("Authorization", "Bearer "+adminTok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "g-amy")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "not_replicated") {
			t.Fatalf("grant without replicas: %d %v %s", resp.StatusCode, resp.Header, body)
		}
	}
	if a, err := ledger.New(rdb, "dab:", "house").Account(context.Background(), "amy", 10); err != nil || a.Balance != 5 || len(a.Entries) != 1 {
		t.Fatalf("amy after two sends of one grant: %+v, %v", a, err)
	}
}
