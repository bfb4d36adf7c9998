package localsvc

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func TestFindBinaryNamesTheFix(t *testing.T) {
	t.Parallel()
	_, err := FindBinary("dab-no-such-server", VersitygwInstallHint)
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "go install github.com/versity/versitygw") {
		t.Fatalf("err = %v", err)
	}
}

// redisDo sends one command and returns the first reply line.
func redisDo(t *testing.T, addr, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	args := strings.Fields(cmd)
	fmt.Fprintf(c, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c, "$%d\r\n%s\r\n", len(a), a)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

func TestRedisKillAndRestartKeepsData(t *testing.T) {
	t.Parallel()
	r, err := StartRedis(RedisOptions{Dir: t.TempDir(), AOF: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	if got := redisDo(t, r.Addr(), "SET k v"); got != "+OK" {
		t.Fatalf("SET = %q", got)
	}
	redisDo(t, r.Addr(), "BGREWRITEAOF")
	time.Sleep(1500 * time.Millisecond) // appendfsync everysec
	r.Kill()
	if r.Running() {
		t.Fatal("still running after Kill")
	}
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	if got := redisDo(t, r.Addr(), "GET k"); got != "$1" {
		t.Fatalf("after restart GET = %q, want the value back", got)
	}
	if err := r.Restart(); err != nil || !r.Running() {
		t.Fatalf("Restart = %v, running %v", err, r.Running())
	}
}

func TestStandInsServe(t *testing.T) {
	t.Parallel()
	er, err := StartEmbeddedRedis(0)
	if err != nil {
		t.Fatal(err)
	}
	defer er.Stop()
	if got := redisDo(t, strings.TrimSuffix(strings.TrimPrefix(er.URL(), "redis://"), "/0"), "PING"); got != "+PONG" {
		t.Fatalf("PING = %q", got)
	}
	es, err := StartEmbeddedS3(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	if err := dialReady(strings.TrimPrefix(es.Endpoint(), "http://")); err != nil {
		t.Fatal(err)
	}
}
