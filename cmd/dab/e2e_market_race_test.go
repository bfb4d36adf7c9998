package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
)

// TestConcurrentPurchasesThroughServe: one listed asset, twelve buyers at
// once through the real server and its workers (four with tokens bound to
// them, eight through a broker): exactly one buys it, the others are
// rejected not_for_sale with nothing moved, the listing ends with the sale,
// and `dab ledger verify` passes.
func TestConcurrentPurchasesThroughServe(t *testing.T) {
	t.Parallel()
	e, base := httpE2E(t)
	const (
		aliceTok  = "race-alice-token-0123456789"
		brokerTok = "race-broker-token-012345678"
	)
	bound := map[string]string{}
	lines := "read,purchase@alice " + aliceTok + "\nbroker " + brokerTok + "\n"
	for i := range 4 {
		acct := fmt.Sprintf("b%d", i)
		bound[acct] = fmt.Sprintf("race-%s-token-0123456789ab", acct)
		lines += "read,purchase@" + acct + " " + bound[acct] + "\n"
	}
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte(lines), 0o600)
	e.env = append(e.env, "DAB_TOKENS_FILE="+tokens)
	e.start(nil, "serve").waitLog(t, "http.listening", 30*time.Second)
	admin := []string{"DAB_SERVER=" + base, "DAB_TOKEN=" + e2eToken}
	asAlice := []string{"DAB_SERVER=" + base, "DAB_TOKEN=" + aliceTok}

	file, _ := writeRandomFile(t, t.TempDir(), "contested.bin", 500)
	out, errOut, code := e.run(admin, "upload", file, "--type", "generic", "--meta", "price=3", "--wait", "--json")
	i := strings.Index(out, `"asset_id":"`)
	if code != 0 || i < 0 {
		t.Fatalf("upload: exit %d\n%s%s", code, out, errOut)
	}
	id := out[i+12 : i+32]
	buyers := []string{"b0", "b1", "b2", "b3"}
	for n := range 8 {
		buyers = append(buyers, fmt.Sprintf("u%d", n))
	}
	for _, acct := range append([]string{"alice"}, buyers...) {
		if out, errOut, code := e.run(admin, "credits", "grant", acct, "10", "--key", "g-"+acct); code != 0 {
			t.Fatalf("grant %s: exit %d\n%s%s", acct, code, out, errOut)
		}
	}
	for _, step := range [][]string{
		{"purchase", "--asset", id, "--credits", "3", "--key", "alice-buys"},
		{"listing", "set", id, "6"},
	} {
		if out, errOut, code := e.run(asAlice, step...); code != 0 {
			t.Fatalf("alice: dab %v: exit %d\n%s%s", step, code, out, errOut)
		}
	}

	// Everyone at once.
	post := func(token, key, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/purchases", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, acct := range buyers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			token, body := brokerTok, fmt.Sprintf(`{"asset_id": %q, "buyer_id": %q, "credits": 6}`, id, acct)
			if tok, ok := bound[acct]; ok {
				token, body = tok, fmt.Sprintf(`{"asset_id": %q, "credits": 6}`, id)
			}
			if status, b := post(token, "race-"+acct, body); status != http.StatusAccepted {
				t.Errorf("%s: %d %s", acct, status, b)
			}
		}()
	}
	close(start)
	wg.Wait()

	results := map[string]ledger.PurchaseResult{}
	harness.Eventually(t, 60*time.Second, "every purchase decided", func() bool {
		for _, acct := range buyers {
			if results[acct].Status != "" && results[acct].Status != ledger.StatusPending {
				continue
			}
			req, _ := http.NewRequest(http.MethodGet, base+"/v1/purchases/race-"+acct, nil)
			req.Header.Set("Authorization", "Bearer "+e2eToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			var r ledger.PurchaseResult
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			results[acct] = r
			if r.Status == ledger.StatusPending || r.Status == "" {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("%+v", results) })
	winner := ""
	for _, acct := range buyers {
		switch r := results[acct]; {
		case r.Status == ledger.StatusSucceeded && winner == "" && r.BuyerID == acct && r.Seller == "alice":
			winner = acct
		case r.Status == ledger.StatusRejected && r.Reason == ledger.ReasonNotForSale:
		default:
			t.Fatalf("%s: %+v (winner so far %q)", acct, r, winner)
		}
	}
	if winner == "" {
		t.Fatalf("nobody bought it: %+v", results)
	}
	rec, err := e.records(t).Get(context.Background(), id)
	if err != nil || rec.Owner != winner || rec.Listing != nil {
		t.Fatalf("record after the race: %+v, %v; want owned by %s, not listed", rec, err, winner)
	}
	for acct, want := range map[string]string{"alice": "alice: 13 credits", winner: winner + ": 4 credits"} {
		if out, errOut, code := e.run(admin, "account", "show", acct); code != 0 || !strings.Contains(out, want) {
			t.Errorf("account %s: exit %d\n%s%s\nwant %q", acct, code, out, errOut, want)
		}
	}
	for _, acct := range buyers {
		if acct == winner {
			continue
		}
		if out, _, _ := e.run(admin, "account", "show", acct); !strings.Contains(out, acct+": 10 credits") {
			t.Errorf("a rejected buyer was charged:\n%s", out)
		}
	}
	if out, errOut, code := e.run(nil, "ledger", "verify"); code != 0 || !strings.Contains(out, "ok: every balance") {
		t.Fatalf("dab ledger verify: exit %d\n%s%s", code, out, errOut)
	}
}
