package netguard

import (
	"net/netip"
	"strings"
	"testing"
)

// TestHostRules: allow lists compare hosts without case, brackets or IP
// spelling; entries that are not a bare host are refused; addresses that
// are not the public internet are blocked, also when embedded in IPv6.
func TestHostRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		list []string
		host string
		want bool
	}{
		{[]string{"CDN.example.org."}, "cdn.example.org", true},
		{[]string{"[::1]"}, "::1", true},
		{[]string{"::ffff:127.0.0.1"}, "127.0.0.1", true},
		{[]string{"cdn.example.org"}, "evil.example.org", false},
		{nil, "localhost", false},
	} {
		if got := HostIn(tc.list, tc.host); got != tc.want {
			t.Errorf("HostIn(%v, %q) = %v", tc.list, tc.host, got)
		}
	}
	for _, bad := range []string{"http://cdn.example.org", "cdn.example.org:443", "cdn.example.org/x", "a b", "\u202ecdn.example.org", strings.Repeat("a", 300), "10.0.0.0/8"} {
		if CheckHost(bad) == nil {
			t.Errorf("CheckHost(%q) accepted it", bad)
		}
	}
	for addr, want := range map[string]bool{"127.0.0.1": true, "10.1.2.3": true, "169.254.169.254": true, "100.64.0.1": true,
		"::1": true, "64:ff9b::a01:203": true, "2002:a01:203::": true, "8.8.8.8": false, "2606:4700::1111": false} {
		if got := Blocked(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Blocked(%s) = %v, want %v", addr, got, want)
		}
	}
	g := New(Options{AllowHTTP: []string{"localhost"}})
	for u, ok := range map[string]bool{"https://cdn.example.org/a.png": true, "http://localhost:8080/a": true, "http://cdn.example.org/a": false,
		"file:///etc/passwd": false, "https://user:pw@cdn.example.org/a": false, "https:///a": false, "gopher://x/": false} {
		err := g.CheckURL(u)
		if (err == nil) != ok {
			t.Errorf("CheckURL(%q) = %v, want ok %v", u, err, ok)
		}
		if err != nil && strings.Contains(err.Error(), "pw@") {
			t.Errorf("CheckURL(%q) shows the password: %v", u, err)
		}
	}
}
