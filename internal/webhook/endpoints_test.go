package webhook_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/webhook"
)

// secret makes a Standard Webhooks secret of n bytes.
func secret(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + n)
	}
	return webhook.SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

func parse(file string, o webhook.Options) ([]webhook.Endpoint, error) {
	return webhook.Parse(strings.NewReader(file), "hooks.txt", o)
}

func TestParse(t *testing.T) {
	t.Parallel()
	s := secret(32)
	file := strings.Join([]string{
		"# endpoints of the shop",
		"",
		"https://hooks.example.com/dab?token=abc " + s + "   # every event",
		"  https://crm.example.com:8443/in " + secret(24) + " purchase.succeeded,credits.granted,purchase.succeeded",
		"http://127.0.0.1:9000/dev " + secret(64) + " *",
		"http://[::1]:9001/dev " + s + " upload.failed",
	}, "\n")
	eps, err := parse(file, webhook.Options{AllowHTTP: []string{"127.0.0.1", "::1"}, AllowPrivate: []string{"127.0.0.1", "[::1]"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 4 {
		t.Fatalf("%d endpoints, want 4", len(eps))
	}
	want := []struct {
		n, line      int
		host, types  string
		display      string
		allowPrivate bool
	}{
		{1, 3, "hooks.example.com", "*", "https://hooks.example.com/dab?…", false},
		{2, 4, "crm.example.com", "credits.granted,purchase.succeeded", "https://crm.example.com:8443/in", false},
		{3, 5, "127.0.0.1", "*", "http://127.0.0.1:9000/dev", true},
		{4, 6, "::1", "upload.failed", "http://[::1]:9001/dev", true},
	}
	for i, w := range want {
		e := eps[i]
		if e.N != w.n || e.Line != w.line || e.Host() != w.host || e.TypesText() != w.types || e.Display() != w.display || e.AllowPrivate != w.allowPrivate {
			t.Errorf("endpoint %d = %d line %d %s %s %s %v, want %+v", i, e.N, e.Line, e.Host(), e.TypesText(), e.Display(), e.AllowPrivate, w)
		}
		if e.ID != webhook.EndpointID(e.URL()) || len(e.ID) != 16 {
			t.Errorf("endpoint %d ID %q", i, e.ID)
		}
		// The secret never shows, however the endpoint is printed.
		for _, out := range []string{fmt.Sprint(e), fmt.Sprintf("%+v", e), fmt.Sprintf("%#v", e), fmt.Sprintf("%v", []webhook.Endpoint{e}), fmt.Sprintf("%+v", struct{ E webhook.Endpoint }{e})} {
			if strings.Contains(out, strings.TrimPrefix(s, webhook.SecretPrefix)[:20]) || strings.Contains(out, "token=abc") {
				t.Errorf("endpoint %d printed with its secret or URL token: %s", i, out)
			}
		}
	}
	if !eps[1].Receives(event.TypePurchaseSucceeded) || eps[1].Receives(event.TypeAssetRecorded) || !eps[0].Receives(event.TypeAssetRecorded) {
		t.Error("Receives does not follow the types")
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	s := secret(32)
	tests := []struct {
		name, file string
		o          webhook.Options
		want       string
	}{
		{"one field", "https://a.example.com/x", webhook.Options{}, `line 1: want "URL SECRET [TYPES]" (1 fields)`},
		{"four fields", "https://a.example.com/x " + s + " * extra", webhook.Options{}, "line 1: want"},
		{"secret first", s + " https://a.example.com/x", webhook.Options{}, "line 1: the URL (field 1) is not an absolute URL"},
		{"relative", "/hooks " + s, webhook.Options{}, "not an absolute URL"},
		{"ftp", "ftp://a.example.com/x " + s, webhook.Options{}, "is not https://"},
		{"http", "# x\nhttp://a.example.com/x " + s, webhook.Options{}, "line 2: the URL of host a.example.com is http://: use https://, or name the host in DAB_WEBHOOKS_ALLOW_HTTP"},
		{"http, another host allowed", "http://a.example.com/x " + s, webhook.Options{AllowHTTP: []string{"b.example.com"}}, "is http://"},
		{"credentials", "https://user:pw@a.example.com/x " + s, webhook.Options{}, "carries credentials"},
		{"fragment", "https://a.example.com/x#frag " + s, webhook.Options{}, "has a fragment"},
		{"bad port", "https://a.example.com:99999/x " + s, webhook.Options{}, "bad port"},
		{"no whsec_", "https://a.example.com/x " + strings.TrimPrefix(s, "whsec_"), webhook.Options{}, `the secret (field 2) must be "whsec_"`},
		{"bad base64", "https://a.example.com/x whsec_%%%%", webhook.Options{}, "its base64 does not decode"},
		{"too short", "https://a.example.com/x " + secret(16), webhook.Options{}, "it holds 16 bytes"},
		{"too long", "https://a.example.com/x " + secret(65), webhook.Options{}, "it holds 65 bytes"},
		{"unknown type", "https://a.example.com/x " + s + " purchase.done", webhook.Options{}, `unknown event type "purchase.done": use * or a comma-separated list of asset.recorded`},
		{"star in a list", "https://a.example.com/x " + s + " *,asset.recorded", webhook.Options{}, `"*" (every type) stands alone`},
		{"empty type", "https://a.example.com/x " + s + " asset.recorded,", webhook.Options{}, "empty entry"},
		{"secret in types", "https://a.example.com/x " + s + " " + s, webhook.Options{}, "the types field (field 3) holds a secret"},
		{"duplicate", "https://a.example.com/x " + s + "\n\nhttps://a.example.com/x " + secret(40), webhook.Options{}, "line 3: the same URL as line 1"},
		{"private address", "https://10.1.2.3/x " + s, webhook.Options{}, "the URL's address 10.1.2.3 is private"},
		{"metadata service", "http://169.254.169.254/latest " + s, webhook.Options{AllowHTTP: []string{"169.254.169.254"}}, "169.254.169.254 is private"},
		{"loopback v6", "https://[::1]/x " + s, webhook.Options{}, "::1 is private"},
		{"mapped v4", "https://[::ffff:127.0.0.1]/x " + s, webhook.Options{}, "is private"},
		{"bad allowed host", "", webhook.Options{AllowPrivate: []string{"http://x.example.com"}}, "allowed host"},
		{"long line", strings.Repeat("x", 20<<10), webhook.Options{}, "line 1: longer than 16 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse(tt.file, tt.o)
			if !errors.Is(err, webhook.ErrFile) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one with %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "hooks.txt") && !strings.Contains(err.Error(), "DAB_WEBHOOKS_ALLOW_") {
				t.Errorf("the error does not name the file: %v", err)
			}
			// Neither a secret nor a URL (which may carry credentials) is quoted.
			for _, leak := range []string{strings.TrimPrefix(s, webhook.SecretPrefix)[:16], "pw@", "#frag", "a.example.com/x", "a.example.com:99999"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("the error quotes %q: %v", leak, err)
				}
			}
		})
	}
	// The same private addresses are fine when their host is allowed.
	if _, err := parse("https://10.1.2.3/x "+s, webhook.Options{AllowPrivate: []string{"10.1.2.3"}}); err != nil {
		t.Fatalf("an allowed private address: %v", err)
	}
}

func TestBlocked(t *testing.T) {
	t.Parallel()
	tests := map[string]bool{
		"127.0.0.1": true, "127.8.9.10": true, "10.0.0.1": true, "172.16.5.4": true, "192.168.1.1": true,
		"169.254.169.254": true, "0.0.0.0": true, "0.1.2.3": true, "100.64.0.1": true, "100.100.100.200": true,
		"224.0.0.1": true, "255.255.255.255": true, "240.0.0.1": true, "192.0.2.1": true, "198.18.0.1": true,
		"::": true, "::1": true, "fe80::1": true, "fe80::1%eth0": true, "fc00::1": true, "fd00:ec2::254": true, "ff02::1": true,
		"::ffff:10.0.0.1": true, "::ffff:169.254.169.254": true, "::ffff:127.0.0.1": true, "::10.0.0.1": true,
		"64:ff9b::a9fe:a9fe": true, "2002:a9fe:a9fe::1": true, "2001:db8::1": true, "fec0::1": true,
		"8.8.8.8": false, "1.1.1.1": false, "93.184.216.34": false, "100.128.0.1": false, "172.32.0.1": false,
		"2606:4700:4700::1111": false, "::ffff:8.8.8.8": false, "64:ff9b::808:808": false, "2002:808:808::1": false,
	}
	for addr, want := range tests {
		if got := webhook.Blocked(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Blocked(%s) = %v, want %v", addr, got, want)
		}
	}
}

// FuzzParse: the parser never panics; whatever it accepts has https URLs
// (or an allowed http host), secrets of 24 to 64 bytes and known types;
// and no error quotes a secret that is in the file.
func FuzzParse(f *testing.F) {
	s := secret(32)
	for _, seed := range []string{
		"https://a.example.com/x " + s,
		"# c\n\nhttps://a.example.com/x " + s + " asset.recorded,credits.granted # note\n",
		"http://127.0.0.1:8080/ " + s + " *",
		"https://a.example.com/x whsec_AAAA",
		"https://u:p@a.example.com/x " + s,
		"https://[::1]/ " + s + " upload.failed",
		"\x00 \xff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, file string) {
		eps, err := webhook.Parse(strings.NewReader(file), "f", webhook.Options{AllowHTTP: []string{"127.0.0.1"}})
		if err != nil {
			if !errors.Is(err, webhook.ErrFile) {
				t.Fatalf("error without ErrFile: %v", err)
			}
			for _, field := range strings.Fields(file) {
				if strings.HasPrefix(field, webhook.SecretPrefix) && len(field) > 10 && strings.Contains(err.Error(), field) {
					t.Fatalf("the error quotes a secret: %v", err)
				}
			}
			return
		}
		for _, e := range eps {
			if !strings.HasPrefix(e.URL(), "https://") && !(strings.HasPrefix(e.URL(), "http://") && e.Host() == "127.0.0.1") {
				t.Fatalf("accepted %s", e.URL())
			}
			for _, typ := range e.Types {
				if !event.KnownType(typ) {
					t.Fatalf("accepted type %q", typ)
				}
			}
			if strings.Contains(fmt.Sprintf("%+v %#v", e, e), webhook.SecretPrefix) {
				t.Fatal("an endpoint prints its secret")
			}
		}
	})
}
