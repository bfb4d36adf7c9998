package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/localsvc"
)

// TestRedisWithTLSAndPassword runs the pipeline against a redis-server that
// only speaks TLS and wants a password (as production Redis should).
func TestRedisWithTLSAndPassword(t *testing.T) {
	t.Parallel()
	bin, err := localsvc.FindBinary("redis-server", localsvc.RedisInstallHint)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca, cert, key := harness.WriteCerts(t, dir)
	port, _ := localsvc.FreePort()
	srv := exec.Command(bin, "--port", "0", "--tls-port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no",
		"--requirepass", "s3cr3t-pass", "--dir", dir, "--save", "", "--appendonly", "yes")
	logf, _ := os.Create(filepath.Join(dir, "redis.log"))
	defer logf.Close()
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(ca)
	pool.AppendCertsFromPEM(caPEM)
	harness.Eventually(t, 10*time.Second, "redis over TLS", func() bool {
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{RootCAs: pool})
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, nil)

	e := newE2E(t)
	url := fmt.Sprintf("rediss://:s3cr3t-pass@127.0.0.1:%d/0", port)
	tlsEnv := []string{"DAB_REDIS_URL=" + url, "DAB_REDIS_CA_FILE=" + ca}
	e.start(tlsEnv, "work").waitLog(t, "worker.started", 30*time.Second)
	file, sum := writeRandomFile(t, t.TempDir(), "NODE_tls.png", 3000)
	out, errOut, code := e.run(tlsEnv, "upload", file, "--type", "cyoa", "--wait", "--json")
	if code != 0 || !strings.Contains(out, `"state":"completed"`) || !strings.Contains(out, sum) {
		t.Fatalf("upload over TLS: exit %d\n%s\n%s", code, out, errOut)
	}
	// A wrong password and a missing CA each get a clear error, no secret in it.
	for _, bad := range [][]string{
		{"DAB_REDIS_URL=" + strings.Replace(url, "s3cr3t-pass", "wrong-pass", 1), "DAB_REDIS_CA_FILE=" + ca},
		{"DAB_REDIS_URL=" + url},
	} {
		_, errOut, code := e.run(bad, "assets", "list")
		if code != 1 || !strings.Contains(errOut, "is unreachable") || strings.Contains(errOut, "s3cr3t") || strings.Contains(errOut, "wrong-pass") {
			t.Fatalf("bad connection: exit %d: %s", code, errOut)
		}
	}
}
