package config

import (
	"net/netip"
	"strings"
	"testing"
)

// TestEffectiveMasksEveryURL: dab config shows every URL setting through
// redact.URL, and validation errors about URLs leak nothing either.
func TestEffectiveMasksEveryURL(t *testing.T) {
	t.Parallel()
	cfg, err := NewLoader(envOf(map[string]string{
		"DAB_REDIS_MODE":      "sentinel",
		"DAB_REDIS_URL":       "redis://:sentinel-pw-1@10.0.0.1:26379?master_name=main&addr=10.0.0.2:26379&password=master-pw-2",
		"DAB_SERVER":          "https://ops:server-pw-3@dab.example/?token=server-tok-4",
		"DAB_PROMETHEUS_ADDR": "http://prom:prom-pw-5@prom.internal:9090",
		"AWS_ENDPOINT_URL_S3": "https://s3user:s3-pw-6@s3.internal:9000",
	})).Load()
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, l := range cfg.Effective() {
		all.WriteString(l.Env + "=" + l.Value + "\n")
	}
	out := all.String()
	for _, secret := range []string{"sentinel-pw-1", "master-pw-2", "server-pw-3", "server-tok-4", "prom-pw-5", "s3-pw-6"} {
		if strings.Contains(out, secret) {
			t.Errorf("secret %q printed:\n%s", secret, out)
		}
	}
	for _, keep := range []string{"10.0.0.2:26379", "master_name=main", "dab.example", "prom.internal:9090", "s3.internal:9000"} {
		if !strings.Contains(out, keep) {
			t.Errorf("%q missing:\n%s", keep, out)
		}
	}

	for env, raw := range map[string]string{
		"DAB_SERVER":          "ftp://u:bad-server-pw@x",
		"AWS_ENDPOINT_URL_S3": "s3.internal:9000?secret=bad-endpoint-pw",
		"DAB_REDIS_URL":       "redis://h:1?password=bad-redis-pw&bogus=1",
	} {
		_, err := NewLoader(envOf(map[string]string{env: raw})).Load()
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%s=%s: err = %v", env, raw, err)
			continue
		}
		if strings.Contains(err.Error(), "bad-") {
			t.Errorf("%s: validation error leaks the secret: %v", env, err)
		}
	}
}

func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	cfg, err := NewLoader(envOf(map[string]string{"DAB_TRUSTED_PROXIES": " 10.0.0.0/8, 192.0.2.7 ,::1, 10.1.2.3/16"})).Load()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("10.1.0.0/16")}
	if len(cfg.TrustedProxies) != len(want) {
		t.Fatalf("TrustedProxies = %v", cfg.TrustedProxies)
	}
	for i := range want {
		if cfg.TrustedProxies[i] != want[i] {
			t.Fatalf("TrustedProxies = %v, want %v", cfg.TrustedProxies, want)
		}
	}
	if def, _ := NewLoader(envOf(nil)).Load(); len(def.TrustedProxies) != 0 {
		t.Fatalf("default trusts %v", def.TrustedProxies)
	}
	for _, bad := range []string{"proxy.example", "10.0.0.0/33", "1.2.3"} {
		if _, err := NewLoader(envOf(map[string]string{"DAB_TRUSTED_PROXIES": bad})).Load(); err == nil || !strings.Contains(err.Error(), "DAB_TRUSTED_PROXIES") {
			t.Errorf("DAB_TRUSTED_PROXIES=%q: %v", bad, err)
		}
	}
}
