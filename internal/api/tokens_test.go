package api

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/harness"
)

// TestTokensFileBindsAccounts: "scope[,scope]@account token" binds a token
// to one account; a purchase token must be bound (it spends an account's
// credits) and admin or broker may not be (they act for every account).
func TestTokensFileBindsAccounts(t *testing.T) {
	t.Parallel()
	const tok = "token-0123456789abcdef"
	tests := []struct {
		line, wantErr, account string
		scopes                 []string
	}{
		{line: "read,purchase@alice " + tok, account: "alice", scopes: []string{"purchase", "read"}},
		{line: "purchase@bob.smith:1 " + tok, account: "bob.smith:1", scopes: []string{"purchase"}},
		{line: "purchase@al@ice " + tok, account: "al@ice", scopes: []string{"purchase"}},
		{line: "ingest@carol " + tok, account: "carol", scopes: []string{"ingest"}},
		{line: "broker " + tok, scopes: []string{"broker"}},
		{line: "read,broker " + tok, scopes: []string{"broker", "read"}},
		{line: "purchase " + tok, wantErr: "must be bound to that account (purchase@alice TOKEN)"},
		{line: "read,purchase " + tok, wantErr: "broker scope instead"},
		{line: "admin@alice " + tok, wantErr: "cannot be bound"},
		{line: "broker@alice " + tok, wantErr: "cannot be bound"},
		{line: "purchase@ " + tok, wantErr: "bound account"},
		{line: "purchase@bad/acct " + tok, wantErr: "bound account"},
		{line: "sell@alice " + tok, wantErr: `unknown scope "sell"`},
	}
	for _, tt := range tests {
		file := filepath.Join(t.TempDir(), "tokens")
		os.WriteFile(file, []byte(tt.line+"\n"), 0o600)
		tokens, err := LoadTokens("", file)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "line 1") {
				t.Errorf("%q: error %v, want one with %q and the line", tt.line, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.line, err)
			continue
		}
		e, ok := tokens.lookup(tok)
		if !ok || e.account != tt.account || scopeList(e.scopes) != strings.Join(tt.scopes, ",") {
			t.Errorf("%q: entry %+v, want account %q scopes %v", tt.line, e, tt.account, tt.scopes)
		}
	}
}

func TestCallerBuyer(t *testing.T) {
	t.Parallel()
	scopes := func(s ...string) map[string]bool {
		m := map[string]bool{}
		for _, x := range s {
			m[x] = true
		}
		return m
	}
	tests := []struct {
		name      string
		c         Caller
		requested string
		want      string
		err       error
	}{
		{"bound, buyer left out", Caller{Scopes: scopes("purchase"), Account: "alice"}, "", "alice", nil},
		{"bound, own buyer", Caller{Scopes: scopes("purchase"), Account: "alice"}, "alice", "alice", nil},
		{"bound, another buyer", Caller{Scopes: scopes("purchase"), Account: "alice"}, "bob", "", ErrWrongBuyer},
		{"broker names the buyer", Caller{Scopes: scopes("broker")}, "bob", "bob", nil},
		{"broker without buyer", Caller{Scopes: scopes("broker")}, "", "", ErrBuyerRequired},
		{"admin names the buyer", Caller{Scopes: scopes("admin")}, "bob", "bob", nil},
		{"admin without buyer", Caller{Scopes: scopes("admin")}, "", "", ErrBuyerRequired},
		{"read token", Caller{Scopes: scopes("read")}, "bob", "", ErrNotPermitted},
	}
	for _, tt := range tests {
		got, err := tt.c.Buyer(tt.requested)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("%s: %q, %v; want %q, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
	if !(Caller{Scopes: scopes("admin")}).ActsFor("anyone") || !(Caller{Account: "a"}).ActsFor("a") ||
		(Caller{Account: "a"}).ActsFor("b") || (Caller{Scopes: scopes("broker")}).ActsFor("b") || (Caller{}).ActsFor("") {
		t.Fatal("ActsFor: admin acts for all, a bound token for its account only, nobody for \"\"")
	}
}

// TestSessionEndsWhenTheBindingChanges: a console session acts as the
// account its token was bound to at login; bound to another account now,
// the session ends rather than act for someone else.
func TestSessionEndsWhenTheBindingChanges(t *testing.T) {
	t.Parallel()
	rdb := harness.RedisClient(t, harness.Redis(t))
	const tok = "token-bound-0123456789ab"
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("read,purchase@alice "+tok+"\n"), 0o600)
	before := authServer(t, rdb, "b:", file)
	id := sessionLogin(t, before, tok)
	if rec := authDo(before, "/t/purchase", "192.0.2.1:1", id, ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"account": "alice"`) {
		t.Fatalf("session before: %d %s", rec.Code, rec.Body)
	}
	if rec := authDo(before, "/t/purchase", "192.0.2.1:1", "", tok); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"account": "alice"`) {
		t.Fatalf("bearer: %d %s", rec.Code, rec.Body)
	}
	os.WriteFile(file, []byte("read,purchase@mallory "+tok+"\n"), 0o600)
	after := authServer(t, rdb, "b:", file)
	if rec := authDo(after, "/t/purchase", "192.0.2.1:1", id, ""); rec.Code != 401 {
		t.Fatalf("session after the binding changed: %d %s", rec.Code, rec.Body)
	}
	if n := rdb.Exists(context.Background(), "b:{web}:session:"+id).Val(); n != 0 {
		t.Fatal("session still in Redis")
	}
}
