package redact

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

// TestRedactURL: every secret a URL can carry is masked, the parts an
// operator needs (scheme, hosts, every address of a list, database, master
// name) stay, and a URL that does not parse is never echoed.
func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, raw, want string
		secrets         []string
	}{
		{"no secret", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", nil},
		{"empty", "", "", nil},
		{"userinfo", "redis://dab:hunter22@redis.internal:6379/2", "redis://dab:xxxxx@redis.internal:6379/2", []string{"hunter22"}},
		{"password only", "redis://:pw-secret@127.0.0.1:1/0", "redis://:xxxxx@127.0.0.1:1/0", []string{"pw-secret"}},
		{"escaped password", "rediss://:p%40ss%3Aw0rd@h:6380/1", "rediss://:xxxxx@h:6380/1", []string{"p%40ss", "p@ss", "w0rd"}},
		{"user name alone may be a password", "redis://lonepass@h:1/0", "redis://xxxxx@h:1/0", []string{"lonepass"}},
		{"sentinel master password", "redis://sent:spw-123@10.0.0.1:26379?master_name=main&addr=10.0.0.2:26379&password=mpw-456",
			"redis://sent:xxxxx@10.0.0.1:26379?master_name=main&addr=10.0.0.2:26379&password=xxxxx", []string{"spw-123", "mpw-456"}},
		{"sentinel_password and username", "redis://10.0.0.1:26379?master_name=m&sentinel_password=sp-789&username=ann",
			"redis://10.0.0.1:26379?master_name=m&sentinel_password=xxxxx&username=ann", []string{"sp-789"}},
		{"redis-sentinel with a host list", "redis-sentinel://:spw-1a@h1:26379,h2:26379,h3:26379/mymaster/0?password=mpw-2b",
			"redis-sentinel://:xxxxx@h1:26379,h2:26379,h3:26379/mymaster/0?password=xxxxx", []string{"spw-1a", "mpw-2b"}},
		{"cluster with more addresses", "rediss://u:cpw-1@n1:7000?addr=n2:7000&addr=n3:7000",
			"rediss://u:xxxxx@n1:7000?addr=n2:7000&addr=n3:7000", []string{"cpw-1"}},
		{"upper-case parameter", "redis://h:1?PASSWORD=Up-Pw-1", "redis://h:1?PASSWORD=xxxxx", []string{"Up-Pw-1"}},
		{"escaped parameter name", "redis://h:1?pass%77ord=enc-pw-1", "redis://h:1?pass%77ord=xxxxx", []string{"enc-pw-1"}},
		{"escaped parameter value", "redis://h:1?password=a%26b%3Dc-pw", "redis://h:1?password=xxxxx", []string{"a%26b", "a&b=c-pw"}},
		{"semicolon separator", "redis://h:1?a=1;password=semi-pw", "redis://h:1?a=1;password=xxxxx", []string{"semi-pw"}},
		{"token and api key", "https://dab.example/v1?token=tk-abc&api_key=ak-def&x=1", "https://dab.example/v1?token=xxxxx&api_key=xxxxx&x=1", []string{"tk-abc", "ak-def"}},
		{"presigned", "https://s3.example/b/k?X-Amz-Credential=AKIAX%2F1&X-Amz-Signature=sig-abc&X-Amz-Expires=60",
			"https://s3.example/b/k?X-Amz-Credential=xxxxx&X-Amz-Signature=xxxxx&X-Amz-Expires=60", []string{"AKIAX", "sig-abc"}},
		{"secret alias", "redis://h:1?client_secret=cs-1&auth=au-1", "redis://h:1?client_secret=xxxxx&auth=xxxxx", []string{"cs-1", "au-1"}},
		{"opaque userinfo", "redis:u:opq-pass@h:1", "redis:xxxxx@h:1", []string{"opq-pass"}},
		{"no scheme", "u:ns-pass@h:1", "u:xxxxx@h:1", []string{"ns-pass"}},
		{"no scheme, slashes", "//u:sl-pass@h:1/0", "//u:xxxxx@h:1/0", []string{"sl-pass"}},
		// Unparseable or cut in the wrong place: never shown.
		{"space in password", "redis://:pa ss-w@h:1/0", Unparseable, []string{"pa ss", "ss-w"}},
		{"password without host", "redis://:only-secret", Unparseable, []string{"only-secret"}},
		{"'?' in password", "redis://:pa?ss-x@h:1/0", Unparseable, []string{"pa?ss", "ss-x"}},
		{"'#' in password, digits before it", "redis://u:12#34ab@h:1", Unparseable, []string{"12#34", "34ab"}},
		{"fragment", "redis://h:1/0#frag-secret", Unparseable, []string{"frag-secret"}},
		{"bad escape", "redis://:bad%zz-pw@h:1", Unparseable, []string{"bad%zz-pw"}},
		{"bad port", "redis://u:hunter2@h:notaport/0", Unparseable, []string{"hunter2"}},
		{"control character", "redis://:ctl-pw\n@h:1", Unparseable, []string{"ctl-pw"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := URL(tt.raw)
			if got != tt.want {
				t.Errorf("URL(%q) = %q, want %q", tt.raw, got, tt.want)
			}
			for _, s := range tt.secrets {
				if strings.Contains(got, s) {
					t.Errorf("URL(%q) = %q shows %q", tt.raw, got, s)
				}
				// Any message that quotes the URL or the secret is masked too.
				for _, msg := range []string{"dial " + tt.raw + ": refused", `parse "` + tt.raw + `": bad`} {
					if r := Text(msg, tt.raw); strings.Contains(r, s) {
						t.Errorf("Text(%q) = %q shows %q", msg, r, s)
					}
				}
			}
		})
	}
}

func TestRedactTextKeepsTheRest(t *testing.T) {
	t.Parallel()
	raw := "redis://:spw-123@10.0.0.1:26379?master_name=main&password=mpw-456"
	got := Text("redis at "+raw+" is unreachable: dial tcp 10.0.0.1:26379: connection refused", raw)
	want := "redis at redis://:xxxxx@10.0.0.1:26379?master_name=main&password=xxxxx is unreachable: dial tcp 10.0.0.1:26379: connection refused"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	// A library that quotes the bare secret, as written or unescaped.
	raw = "rediss://:p%40ss%3Aw0rd@h:6380/1?password=a%26b%3Dc-pw"
	for _, msg := range []string{`bad password "p@ss:w0rd"`, "bad password p%40ss%3Aw0rd", `bad value "a&b=c-pw"`, "bad value a%26b%3Dc-pw"} {
		if got := Text(msg, raw); strings.Contains(got, "w0rd") || strings.Contains(got, "c-pw") {
			t.Errorf("Text(%q) = %q", msg, got)
		}
	}
	// A message that has nothing of an unparseable URL in it is kept.
	if got := Text("connection refused", "redis://:pa ss@h:1"); got != "connection refused" {
		t.Fatalf("unrelated message changed: %q", got)
	}
	if got := Text("anything", "", "redis://h:1"); got != "anything" {
		t.Fatalf("no secrets: %q", got)
	}
}

func TestRedactErrorWraps(t *testing.T) {
	t.Parallel()
	if Error(nil, "redis://:x@h") != nil {
		t.Fatal("nil error became non-nil")
	}
	base := &fs.PathError{Op: "open", Path: "mpw-456", Err: fs.ErrNotExist}
	err := Error(base, "redis://h:1?password=mpw-456")
	if strings.Contains(err.Error(), "mpw-456") || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("RedactError: %q, Is(ErrNotExist) = %v", err, errors.Is(err, fs.ErrNotExist))
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		t.Fatal("errors.As lost the wrapped error")
	}
}

// FuzzRedactURL: whatever follows it, a password planted in a URL's
// userinfo never shows (it may show where the rest of the URL repeats it).
func FuzzRedactURL(f *testing.F) {
	for _, s := range []string{"redis://u:pw@h:1/0", "redis://h:1?password=pw", "redis://:p#w@h", "redis://:p?w@h", "u:pw@h"} {
		f.Add(s, "sikrit")
	}
	f.Fuzz(func(t *testing.T, raw, secret string) {
		// Letters that percent-escapes and the mask never produce: a match is the password.
		if len(secret) < 4 || strings.Trim(secret, "ghijklmnopqrstuvwyzGHIJKLMNOPQRSTUVWYZ") != "" {
			return
		}
		rest := raw
		if i := strings.Index(raw, "://"); i >= 0 {
			rest = raw[i+3:]
		}
		planted := "redis://user:" + secret + "@" + rest
		if got := URL(planted); strings.Count(got, secret) > strings.Count(rest, secret) {
			t.Fatalf("URL(%q) = %q shows the password", planted, got)
		}
	})
}
