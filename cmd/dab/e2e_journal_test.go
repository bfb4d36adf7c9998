package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/harness"
)

// TestLedgerJournalRestoreCLI: a running `dab work` copies the ledger to
// the bucket every DAB_JOURNAL_INTERVAL; after Redis loses everything,
// `dab ledger restore` brings the balances back and `dab ledger verify
// --journal` accepts them; a restore into a ledger with entries is refused.
func TestLedgerJournalRestoreCLI(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	e.env = append(e.env, "DAB_JOURNAL_INTERVAL=200ms")
	e.start(nil, "work").waitLog(t, "worker.started", 30*time.Second)
	for _, g := range [][]string{{"amy", "10"}, {"bo", "7"}} {
		if out, errOut, code := e.run(nil, "credits", "grant", g[0], g[1], "--key", "g-"+g[0]); code != 0 {
			t.Fatalf("grant: exit %d\n%s%s", code, out, errOut)
		}
	}
	harness.Eventually(t, 20*time.Second, "both grants journaled", func() bool {
		out, _, code := e.run(nil, "ledger", "verify", "--journal")
		return code == 0 && strings.Contains(out, "journal: 2 entries") && !strings.Contains(out, "ahead")
	}, nil)
	if out, errOut, code := e.run(nil, "ledger", "restore"); code != 1 || !strings.Contains(out+errOut, "the ledger has entries") {
		t.Fatalf("restore into a full ledger: exit %d\n%s%s", code, out, errOut)
	}
	if err := e.redisClient(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ledger", "restore"}, 0, "restored 2 entries"},
		{[]string{"ledger", "verify", "--journal"}, 0, "ok: every balance"},
		{[]string{"account", "show", "amy"}, 0, "amy: 10 credits"},
		{[]string{"account", "show", "bo"}, 0, "bo: 7 credits"},
		{[]string{"credits", "grant", "amy", "10", "--key", "g-amy"}, 0, "balance 10"},
	}
	for _, s := range steps {
		out, errOut, code := e.run(nil, s.args...)
		if code != s.code || !strings.Contains(out+errOut, s.want) {
			t.Fatalf("dab %v: exit %d\n%s%s\nwant exit %d and %q", s.args, code, out, errOut, s.code, s.want)
		}
	}
}
